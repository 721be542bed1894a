"""Neural / low-rank HMM (longseq.structured.hmm) against brute-force enumeration of all N^L state
sequences, in float64; tolerances are stated per check."""

import itertools
import math

import pytest
import torch

from longseq.ops.hmm import hmm_forward
from longseq.structured import HMM, HMMLanguageModel, build_hmm_lm


def scaled_forward(log_init, mats, log_em, mask=None):
    return hmm_forward(log_init, log_em, mats, mask)[0]


TOL = {"rtol": 1e-10, "atol": 1e-10}  # float64, exact algorithms: only rounding differences


def enumerate_joint(log_init, log_trans, log_em_seq):
    """log p(x, z) for every state sequence z (itertools order) of one sequence; log_em_seq [L, N]."""
    L, N = log_em_seq.shape
    seqs = list(itertools.product(range(N), repeat=L))
    scores = []
    for z in seqs:
        s = log_init[z[0]] + log_em_seq[0, z[0]]
        for t in range(1, L):
            s = s + log_trans[z[t - 1], z[t]] + log_em_seq[t, z[t]]
        scores.append(s)
    return seqs, torch.stack(scores)


def random_hmm(N, V, rank=None, feature_map="exp", emb_dim=6):
    return HMM(N, V, rank=rank, feature_map=feature_map, emb_dim=emb_dim).double()


CASES = [(None, "exp"), (2, "exp"), (3, "softmax_kernel"), (5, "exp")]


@pytest.mark.parametrize("rank,fmap", CASES)
def test_log_likelihood_equals_enumeration_padded(rank, fmap):
    N, V, L = 3, 5, 5
    hmm = random_hmm(N, V, rank, fmap)
    ids = torch.randint(V, (3, L))
    lengths = [5, 3, 1]
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    ids_padded = ids.masked_fill(~mask, 4)  # padding content must not matter
    got = hmm.log_likelihood(ids_padded, mask)
    log_init, log_trans, log_em = hmm.params()
    for b, n in enumerate(lengths):
        _, scores = enumerate_joint(log_init, log_trans, log_em.T[ids[b, :n]])
        torch.testing.assert_close(got[b], scores.logsumexp(0), **TOL)
    # unpadded batch too: the same numbers as sequences of their own
    torch.testing.assert_close(hmm.log_likelihood(ids[:1]), got[:1], **TOL)


def test_log_likelihood_n4_l6_and_gradient_matches_enumeration():
    N, V, L = 4, 3, 6
    hmm = random_hmm(N, V, rank=2)
    ids = torch.randint(V, (1, L))
    ll = hmm.log_likelihood(ids)[0]
    log_init, log_trans, log_em = hmm.params()
    _, scores = enumerate_joint(log_init, log_trans, log_em.T[ids[0]])
    ref = scores.logsumexp(0)
    torch.testing.assert_close(ll, ref, **TOL)
    params = [p for p in hmm.parameters()]
    g1 = torch.autograd.grad(ll, params, allow_unused=True)
    g2 = torch.autograd.grad(ref, params, allow_unused=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("rank", [None, 3])
def test_posterior_marginals_from_autograd(rank):
    N, V, L = 3, 4, 5
    hmm = random_hmm(N, V, rank)
    ids = torch.randint(V, (2, L))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    with torch.no_grad():
        log_init, log_trans, log_em = hmm.params()
    em = log_em.T[ids.masked_fill(~mask, 0)].clone().requires_grad_(True)  # [B, L, N] potentials
    A = log_trans.exp()
    logz = scaled_forward(log_init, [A], em, mask)
    (marg,) = torch.autograd.grad(logz.sum(), em)
    for b in range(2):
        n = int(mask[b].sum())
        seqs, scores = enumerate_joint(log_init, log_trans, em.detach()[b, :n])
        post = (scores - scores.logsumexp(0)).exp()
        ref = torch.zeros(n, N, dtype=torch.float64)
        for z, p in zip(seqs, post):
            for t in range(n):
                ref[t, z[t]] += p
        torch.testing.assert_close(marg[b, :n], ref, **TOL)
        assert bool((marg[b, n:] == 0).all())  # padding gets no posterior mass
        torch.testing.assert_close(marg[b, :n].sum(-1), torch.ones(n, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("rank", [None, 2])
def test_viterbi_equals_enumerated_argmax(rank):
    N, V, L = 3, 4, 6
    hmm = random_hmm(N, V, rank)
    ids = torch.randint(V, (3, L))
    mask = torch.arange(L)[None] < torch.tensor([6, 4, 2])[:, None]
    paths, best = hmm.viterbi(ids, mask)
    log_init, log_trans, log_em = hmm.params()
    for b in range(3):
        n = int(mask[b].sum())
        seqs, scores = enumerate_joint(log_init, log_trans, log_em.T[ids[b, :n]])
        k = int(scores.argmax())
        torch.testing.assert_close(best[b], scores[k], **TOL)
        assert tuple(paths[b, :n].tolist()) == seqs[k]
        assert bool((paths[b, n:] == -1).all())


def test_low_rank_inference_with_rank_n_equals_full():
    """rank = N in the sense the paper allows: any row-stochastic A factorises exactly with
    non-negative rank-N factors (U = A, V = I; Chiu, Deng & Rush 2021 Sec. 3: rank >= N loses no
    expressivity), and the O(N r) low-rank forward on those factors equals the O(N^2) full forward.
    (The *neural* feature-map parameterisation reaches such factors only in a limit, so two models
    with rank=None and rank=N do not define the same family of tables; the inference does agree.)"""
    N, L, B = 4, 7, 3
    A = torch.rand(N, N, dtype=torch.float64).softmax(-1)
    U, V = A.clone(), torch.eye(N, dtype=torch.float64)
    log_init = torch.randn(N, dtype=torch.float64).log_softmax(-1)
    em = torch.randn(B, L, N, dtype=torch.float64).log_softmax(-1)
    full = scaled_forward(log_init, [A], em)
    low = scaled_forward(log_init, [U, V.T], em)
    torch.testing.assert_close(low, full, **TOL)
    # and a rank-N neural LHMM: its low-rank forward equals the full forward on its implied matrix
    hmm = random_hmm(N, 5, rank=N)
    ids = torch.randint(5, (B, L))
    li, lt, le = hmm.params()
    ref = scaled_forward(li, [lt.exp()], le.T[ids])
    torch.testing.assert_close(hmm.log_likelihood(ids), ref, **TOL)


def test_projection_learned_or_fixed():
    learned = HMM(6, 4, rank=3, emb_dim=5)
    fixed = HMM(6, 4, rank=3, emb_dim=5, learn_projection=False)
    assert any(p is learned.projection for p in learned.parameters())
    assert all(p is not fixed.projection for p in fixed.parameters()) and "projection" in fixed.state_dict()
    learned.log_likelihood(torch.randint(4, (2, 3))).sum().backward()
    assert learned.projection.grad is not None and bool(learned.projection.grad.abs().sum() > 0)


@pytest.mark.parametrize("fmap", ["exp", "softmax_kernel"])
def test_low_rank_tables_are_distributions_of_rank_r(fmap):
    hmm = random_hmm(12, 7, rank=3, feature_map=fmap)
    li, lt, le = hmm.params()
    one = lambda n: torch.ones(n, dtype=torch.float64)
    torch.testing.assert_close(lt.exp().sum(-1), one(12), **TOL)
    torch.testing.assert_close(le.exp().sum(-1), one(12), **TOL)
    torch.testing.assert_close(li.exp().sum(), one(1)[0], **TOL)
    assert int(torch.linalg.matrix_rank(lt.exp())) <= 3


def test_float32_stable_at_length_1000_matches_float64():
    torch.manual_seed(1)
    for rank in (None, 16):
        hmm64 = HMM(64, 50, rank=rank, emb_dim=16).double()
        hmm32 = HMM(64, 50, rank=rank, emb_dim=16)
        hmm32.load_state_dict({k: v.float() for k, v in hmm64.state_dict().items()})
        ids = torch.randint(50, (2, 1000))
        ll32 = hmm32.log_likelihood(ids)
        ll32.sum().backward()
        assert bool(torch.isfinite(ll32).all())
        assert all(bool(torch.isfinite(p.grad).all()) for p in hmm32.parameters())
        ll64 = hmm64.log_likelihood(ids)
        assert ll64.abs().min() > 1000  # far below float32's exp range
        torch.testing.assert_close(ll32.double(), ll64, rtol=1e-5, atol=0)  # float32 rounding


def test_bad_input_raises():
    hmm = random_hmm(3, 5)
    with pytest.raises(ValueError, match="out of range"):
        hmm.log_likelihood(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="out of range"):
        hmm.viterbi(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="empty"):
        hmm.log_likelihood(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty sequence"):
        hmm.log_likelihood(torch.tensor([[1, 2], [1, 1]]), torch.tensor([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="prefix"):
        hmm.log_likelihood(torch.tensor([[1, 2]]), torch.tensor([[False, True]]))
    with pytest.raises(ValueError, match="integer"):
        hmm.log_likelihood(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="rank"):
        HMM(4, 5, rank=0)
    with pytest.raises(ValueError, match="feature_map"):
        HMM(4, 5, rank=2, feature_map="relu")
    with pytest.raises(ValueError, match="num_states"):
        HMM(0, 5)
    with pytest.raises(ValueError, match="unknown HMM option"):
        build_hmm_lm(5, {"states": 4})


@pytest.mark.parametrize("rank", [None, 3])
def test_generate_shapes_and_frequencies(rank):
    hmm = HMM(3, 4, rank=rank, emb_dim=6).double()
    x, z = hmm.generate(4000, 2, generator=torch.Generator().manual_seed(0), return_states=True)
    assert x.shape == z.shape == (4000, 2)
    _li, _lt, _le = hmm.params()
    # empirical p(x_1, x_2) against the exact marginal (forward over the 2-token sequences), 4 sigma
    for a in range(4):
        for b in range(4):
            p = hmm.log_likelihood(torch.tensor([[a, b]])).exp().item()
            freq = ((x[:, 0] == a) & (x[:, 1] == b)).double().mean().item()
            assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 4000) + 1e-3


@pytest.mark.parametrize("rank", [None, 4])
def test_lm_wrapper_predictive_equals_likelihood_ratio(rank):
    """sum_t log p(x_{t+1} | x_<=t) from the wrapper == log p(x_1..x_L) - log p(x_1) (float64)."""
    m = HMMLanguageModel(6, 5, rank=rank, emb_dim=8).double()
    ids = torch.randint(6, (3, 8))
    logp = m(ids[:, :-1])  # [B, L-1, V]
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 7, dtype=torch.float64), **TOL)
    chain = logp.gather(-1, ids[:, 1:, None])[..., 0].sum(-1)
    ref = m.hmm.log_likelihood(ids) - m.hmm.log_likelihood(ids[:, :1])
    torch.testing.assert_close(chain, ref, **TOL)
    loss = m.loss(logp, ids[:, 1:])
    # the loss is computed in float32, as CausalLM's
    torch.testing.assert_close(loss.double(), -chain.sum() / 21, rtol=1e-6, atol=0)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_lm_wrapper_trains_and_saves(tmp_path):
    from longseq.models import load

    m = HMMLanguageModel(8, 6, rank=3, emb_dim=8)
    m.save(tmp_path / "m")
    m2 = load(tmp_path / "m")
    ids = torch.randint(8, (2, 5))
    torch.testing.assert_close(m2(ids), m(ids))


def test_cli_trains_an_hmm_and_refuses_misuse(tmp_path, capsys):
    import json

    from longseq.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "mqar",
        "--model",
        "hmm",
        "--model-option",
        "num_states=16",
        "--model-option",
        "rank=4",
        "--model-option",
        "emb_dim=8",
        "--task-option",
        "n_train=32",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--task-option",
        "seq_len=32",
        "--task-option",
        "num_kv_pairs=4",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["class"] == "HMMLanguageModel" and cfg["model"]["rank"] == 4
    assert (out / "model" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "HMMLanguageModel: vocab_size 64, num_states 16, rank 4" in capsys.readouterr().out
    assert main(args[:-2] + ["--out", str(tmp_path / "r2"), "--model-option", "states=3"]) == 2
    assert "unknown HMM option" in capsys.readouterr().err
    assert main(["train", "--task", "listops", "--model", "hmm", "--steps", "1"]) == 2
    assert "language model" in capsys.readouterr().err


def test_bench_structured_rows_and_report(tmp_path):
    from longseq.bench.structured import (
        StructuredConfig,
        format_structured,
        run_structured,
        write_structured,
    )

    cfg = StructuredConfig(
        sizes=[8, 16],
        ranks=[None, 4],
        settings={"batch": 2, "length": 5, "vocab_size": 7, "emb_dim": 8},
        repeats=1,
        warmup=0,
        isolate=False,
        device="cpu",
    )
    res = run_structured(cfg, log=lambda m: None)
    rows = {(r["size"], r["rank"]): r for r in res["rows"]}
    assert set(rows) == {(8, None), (16, None), (8, 4), (16, 4)}
    assert all(r["status"] == "ok" and r["finite"] and r["step_ms"]["median"] > 0 for r in rows.values())
    assert (
        rows[(16, 4)]["speedup_vs_full"] == rows[(16, None)]["step_ms"]["median"] / rows[(16, 4)]["step_ms"]["median"]
    )
    assert "| 16 | r=4 |" in format_structured(res)
    paths = write_structured(res, tmp_path, plots=False)
    assert json_rows(tmp_path / "results.json") == 4 and len(paths) == 2
    alt = run_structured(
        StructuredConfig(
            sizes=[8],
            ranks=[None, 4],
            settings={"batch": 2, "length": 5, "vocab_size": 7, "emb_dim": 8},
            repeats=1,
            warmup=0,
            rounds=3,
            isolate=False,
            device="cpu",
        ),
        log=lambda m: None,
    )
    full, low = alt["rows"]
    assert len(full["rounds_ms"]) == len(low["rounds_ms"]) == 3
    ratios = sorted(a / b for a, b in zip(full["rounds_ms"], low["rounds_ms"]))
    assert low["speedup_vs_full"] == ratios[1] and low["speedup_range"] == [ratios[0], ratios[2]]
    assert "alternating rounds" in format_structured(alt)
    with pytest.raises(ValueError, match="unknown structured family"):
        StructuredConfig(family="nope")
    with pytest.raises(ValueError, match="unknown hmm setting"):
        StructuredConfig(settings={"states": 3})


def json_rows(path):
    import json

    return len(json.loads(path.read_text())["rows"])


def test_saved_hmm_language_model_loads_after_import_longseq(tmp_path):
    """``longseq.load`` restores an HMM LM in a fresh process that only ran ``import longseq`` (the
    model class registers when longseq.structured is imported, which the root package does)."""
    import subprocess
    import sys

    from longseq.structured import build_hmm_lm

    torch.manual_seed(0)
    model = build_hmm_lm(7, {"num_states": 4, "rank": 2, "emb_dim": 8})
    model.save(tmp_path / "hmm")
    code = (
        "import sys, longseq; m = longseq.load(sys.argv[1]); "
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "hmm")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["HMMLanguageModel", str(sum(p.numel() for p in model.parameters()))]
