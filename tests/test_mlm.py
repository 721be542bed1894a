"""Masked-LM pre-training: masking statistics and invariants, the MLM tasks, the MaskedLM model.

Masking is checked against its specification (BERT: round(0.15 n) positions, 80/10/10;
SpanBERT: geometric spans, one decision per span) on many fresh rows; tolerances are stated per
test as a few binomial standard deviations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longseq.models import MaskedLM
from longseq.tasks.base import IGNORE, Split
from longseq.tasks.mlm import MASK_ID, MaskedSplit, expected_masked, mask_row

torch.set_num_threads(1)


def _rows(n_rows=2000, L=128, span=False, seed=0, pad_from=None, specials=()):
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_rows):
        ids = rng.integers(0, 256, size=L)
        maskable = np.ones(L, dtype=bool)
        if pad_from is not None:
            maskable[pad_from:] = False
        if specials:
            maskable &= ~np.isin(ids, specials)
        inp, tgt = mask_row(ids, maskable, np.random.default_rng([seed, r]), span=span)
        out.append((ids, maskable, inp, tgt))
    return out


@pytest.mark.parametrize("span", [False, True])
def test_masking_rates(span):
    rows = _rows(span=span)
    sel = changed_to_mask = random = kept = 0
    for ids, maskable, inp, tgt in rows:
        chosen = tgt != IGNORE
        n = int(maskable.sum())
        assert chosen.sum() == expected_masked(n)  # exactly round(0.15 n) positions
        sel += chosen.sum()
        changed_to_mask += (inp[chosen] == MASK_ID).sum()
        kept_here = (inp[chosen] == ids[chosen]).sum()
        kept += kept_here
        random += chosen.sum() - (inp[chosen] == MASK_ID).sum() - kept_here
        assert np.array_equal(inp[~chosen], ids[~chosen])  # unselected positions untouched
    n = 2000 * 128
    assert sel / n == pytest.approx(0.15, abs=0.005)
    # per-position (BERT) or per-span (SpanBERT) decisions: binomial std at most
    # sqrt(.25 / groups); groups >= 2000 * 19 / 10 spans -> 5 sigma < 0.04
    tol = 0.015 if not span else 0.04
    assert changed_to_mask / sel == pytest.approx(0.8, abs=tol)
    # a random replacement equals the original byte with probability 1/256 (counted as kept)
    assert random / sel == pytest.approx(0.1 * 255 / 256, abs=tol)
    assert kept / sel == pytest.approx(0.1 + 0.1 / 256, abs=tol)


def test_span_lengths_are_geometric_and_contiguous():
    rows = _rows(n_rows=300, L=256, span=True)
    runs = []
    for _, _, _, tgt in rows:
        sel = np.concatenate([[0], (tgt != IGNORE).astype(int), [0]])
        d = np.diff(sel)
        runs += list(np.flatnonzero(d == -1) - np.flatnonzero(d == 1))
    mean = float(np.mean(runs))
    # Geometric(0.2) clipped at 10 has mean 3.8; adjacent spans merge and the last span of a
    # row is cut to the budget, so the mean run lies a little above or below: 2.5..6
    assert 2.5 < mean < 6.0
    assert max(runs) > 10 or mean > 3.0  # spans, not isolated positions


def test_specials_and_padding_never_masked():
    for span in (False, True):
        for ids, maskable, inp, tgt in _rows(n_rows=300, L=64, span=span, pad_from=50, specials=(10, 32, 255)):
            assert np.all(tgt[~maskable] == IGNORE)
            assert np.array_equal(inp[~maskable], ids[~maskable])
            assert np.all(tgt[maskable & (tgt != IGNORE)] == ids[maskable & (tgt != IGNORE)])


def test_no_maskable_positions():
    ids = np.arange(8)
    inp, tgt = mask_row(ids, np.zeros(8, dtype=bool), np.random.default_rng(0))
    assert np.array_equal(inp, ids) and np.all(tgt == IGNORE)


class _Toy(Split):
    """A token split with padding: row i has length 20 + i % 30 of L = 48."""

    def __init__(self, n=64, L=48):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, 256, (n, L), generator=g)
        lengths = 20 + torch.arange(n) % 30
        mask = torch.arange(L)[None] < lengths[:, None]
        super().__init__(ids * mask, torch.zeros(n, dtype=torch.long), mask)
        self.seq_len = L


def test_masked_split_determinism_and_labels():
    base = _Toy()
    s1 = MaskedSplit(base, seed=3, salt=1, special_ids=(7,))
    s2 = MaskedSplit(base, seed=3, salt=1, special_ids=(7,))
    s3 = MaskedSplit(base, seed=4, salt=1, special_ids=(7,))
    idx = torch.tensor([5, 9, 33, 5])
    a, b, c = s1.batch(idx), s2.batch(idx), s3.batch(idx)
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["targets"], b["targets"])
    assert not torch.equal(a["targets"], c["targets"])
    assert torch.equal(a["inputs"][0], a["inputs"][3])  # a window's mask depends on its index only
    # a batch is a pure function of its indices: order and companions do not matter
    alone = s1.batch(torch.tensor([33]))
    assert torch.equal(alone["inputs"][0], a["inputs"][2])
    ids, mask = base.inputs[idx], base.mask[idx]
    t = a["targets"]
    sel = t != IGNORE
    assert torch.equal(a["mask"], mask)
    assert not (sel & ~mask).any()  # padding never selected
    assert not (sel & (ids == 7)).any()  # special id never selected
    assert torch.equal(t[sel], ids[sel])  # labels = originals, only there
    assert torch.equal(a["inputs"][~sel], ids[~sel])


def test_masked_split_bad_settings():
    with pytest.raises(ValueError, match="mask_rate"):
        MaskedSplit(_Toy(), seed=0, salt=0, mask_rate=0.0)
    with pytest.raises(ValueError, match="mask_prob and random_prob"):
        MaskedSplit(_Toy(), seed=0, salt=0, mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ValueError, match="max_span"):
        MaskedSplit(_Toy(), seed=0, salt=0, max_span=0)


@pytest.fixture(scope="module")
def code_task():
    from longseq import tasks

    return tasks.build("mlm_code", seed=0, seq_len=64, train_windows=500, max_train_bytes=200_000, max_eval_bytes=5_000)


def test_mlm_code_task(code_task):
    from longseq import tasks

    t = code_task
    assert t.meta.kind == "mlm" and t.meta.vocab_size == 257 and t.meta.metric == "masked_bpb"
    b = t.train.batch(torch.arange(8))
    assert b["inputs"].shape == (8, 64) and int(b["inputs"].max()) <= MASK_ID
    assert ((b["targets"] != IGNORE).sum(1) == expected_masked(64)).all()
    last = t.validation.batch(torch.tensor([len(t.validation) - 1]))
    assert "mask" in last and not (last["targets"][~last["mask"]] != IGNORE).any()
    again = tasks.build(
        "mlm_code", seed=0, seq_len=64, train_windows=500, max_train_bytes=200_000, max_eval_bytes=5_000
    )
    assert again.train.fingerprint() == t.train.fingerprint()
    assert again.validation.fingerprint() == t.validation.fingerprint()
    other = tasks.build(
        "mlm_code", seed=1, seq_len=64, train_windows=500, max_train_bytes=200_000, max_eval_bytes=5_000
    )
    assert other.train.fingerprint() != t.train.fingerprint()
    with pytest.raises(ValueError, match="seq_len"):
        tasks.build("mlm_code", seq_len=5000)
    from longseq.tasks.stats import stats

    st = stats(t)["splits"]["validation"]
    assert st["length"]["max"] == 64 and st["targets_per_example"]["max"] == expected_masked(64)


def test_masked_lm_loss_and_tied_head():
    torch.manual_seed(0)
    m = MaskedLM(257, d_model=32, n_layers=2, mixer="softmax", num_heads=2).double()
    ids = torch.randint(0, 257, (3, 20))
    tgt = torch.full((3, 20), IGNORE)
    tgt[0, 3], tgt[1, 7], tgt[2, 0] = 5, 9, 200
    logits = m(ids)
    assert logits.shape == (3, 20, 257)
    # reference: BERT's head written out, loss over the three labelled positions only
    h = m.backbone(ids)
    t = F.layer_norm(
        F.gelu(h @ m.mlm_transform.weight.T + m.mlm_transform.bias), (32,), m.mlm_norm.weight, m.mlm_norm.bias
    )
    ref = t @ m.backbone.embed.weight.T + m.mlm_bias
    torch.testing.assert_close(logits, ref, rtol=1e-12, atol=1e-12)
    lp = torch.log_softmax(ref, -1)
    want = -(lp[0, 3, 5] + lp[1, 7, 9] + lp[2, 0, 200]) / 3
    torch.testing.assert_close(m.loss(logits, tgt).double(), want, rtol=1e-6, atol=1e-6)
    # the decoder is the embedding table itself (tied): one gradient reaches it from both uses
    assert m.state_dict()["backbone.embed.weight"].data_ptr() == m.backbone.embed.weight.data_ptr()
    assert sum(p.numel() for p in m.parameters()) == m.num_parameters()


def test_masked_lm_refuses_causal_only_mixers():
    with pytest.raises(ValueError, match="bidirectional"):
        MaskedLM(257, d_model=16, n_layers=1, mixer="h3")


def test_train_mlm_resume_bit_exact(code_task, tmp_path, monkeypatch):
    import longseq.train.trainer as tr
    from longseq.train import TrainConfig, build_model, train

    cfg = lambda: TrainConfig(
        steps=6,
        batch_size=4,
        eval_every=4,
        checkpoint_every=3,
        log_every=1,  # noqa: E731
        eval_max_batches=2,
        progress=False,
        warmup=2,
    )
    torch.manual_seed(0)
    full = train(build_model(code_task, "softmax", d_model=16, n_layers=1), code_task, cfg(), tmp_path / "a")
    real_save = tr._save_checkpoint

    def save_then_die(path, model, opt, sched, step, c, **kw):
        real_save(path, model, opt, sched, step, c)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_save_checkpoint", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(code_task, "softmax", d_model=16, n_layers=1), code_task, cfg(), tmp_path / "b")
    monkeypatch.setattr(tr, "_save_checkpoint", real_save)
    torch.manual_seed(5)
    resumed = train(
        build_model(code_task, "softmax", d_model=16, n_layers=1), code_task, cfg(), tmp_path / "b", resume=True
    )
    assert full["test"] == resumed["test"]
    assert "masked_bpb" in full["test"]
    assert math.isclose(full["test"]["masked_bpb"], full["test"]["loss"] / math.log(2))
