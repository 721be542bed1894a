"""Models: cached generation, padding-aware pooling, pair inputs, hybrid stacks, save/load safety."""

import json

import pytest
import torch

import longseq
from longseq.models import CausalLM, SequenceClassifier

STEP_MIXERS = [n for n in longseq.mixers.names() if longseq.mixers.spec(n).step]


def _opts(name):
    from mixer_options import options_for

    return {k: v for k, v in options_for(name).items() if k != "rope"}


@pytest.mark.parametrize("mixer", STEP_MIXERS)
def test_cached_generation_equals_uncached_greedy(mixer):
    torch.manual_seed(0)
    m = CausalLM(40, 32, 2, mixer=mixer, mixer_options=_opts(mixer), num_heads=2, position="sinusoidal").double()
    prompt = torch.randint(0, 40, (2, 7))
    cached = m.generate(prompt, 12, temperature=0, use_cache=True)
    uncached = m.generate(prompt, 12, temperature=0, use_cache=False)
    assert cached.shape == (2, 19)
    assert torch.equal(cached, uncached)


def test_step_logits_equal_forward_logits():
    torch.manual_seed(0)
    m = CausalLM(30, 32, 2, mixer="softmax", num_heads=2, position="rope").double().eval()
    ids = torch.randint(0, 30, (2, 9))
    full = m(ids)
    state = m.init_state(2)
    for t in range(9):
        lt, state = m.step(ids[:, t], state)
        torch.testing.assert_close(lt, full[:, t], rtol=1e-9, atol=1e-9)


def test_sampling_respects_top_k_and_generator():
    m = CausalLM(30, 16, 1, mixer="softmax")
    prompt = torch.zeros(3, 2, dtype=torch.long)
    a = m.generate(prompt, 5, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(1))
    b = m.generate(prompt, 5, temperature=0)
    assert torch.equal(a, b)  # top_k=1 sampling is greedy
    s1 = m.generate(prompt, 5, generator=torch.Generator().manual_seed(3))
    s2 = m.generate(prompt, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
def test_classifier_padding_aware(pooling):
    torch.manual_seed(0)
    m = SequenceClassifier(
        20, 4, 32, 2, mixer="softmax", num_heads=2, pooling=pooling, position="learned", max_len=16
    ).double()
    ids = torch.randint(0, 20, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    logits = m(ids, mask)
    torch.testing.assert_close(logits[1], m(ids[1:, :7])[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logits[0], m(ids[:1])[0], rtol=1e-9, atol=1e-9)


def test_pair_classifier_is_symmetric_in_encoding():
    m = SequenceClassifier(20, 2, 32, 1, pooling="mean", pair=True)
    ids = torch.randint(0, 20, (3, 2, 10))
    assert m(ids).shape == (3, 2)
    u = m.encode(ids[:, 0])
    v = m.encode(ids[:, 1])
    ref = m.head(torch.cat([u, v, u * v, u - v], -1))
    torch.testing.assert_close(m(ids), ref)
    with pytest.raises(ValueError, match=r"\[batch, 2, length\]"):
        m(ids[:, 0])


def test_hybrid_stack_and_per_layer_options():
    m = CausalLM(
        20, 32, 3, mixer=["softmax", {"name": "softmax_naive", "dropout": 0.0}, "softmax"], num_heads=2, position="rope"
    )
    names = [b.mixer.spec.name for b in m.backbone.blocks]
    assert names == ["softmax", "softmax_naive", "softmax"]
    assert all(b.mixer.rope is not None for b in m.backbone.blocks)
    with pytest.raises(ValueError, match="n_layers"):
        CausalLM(20, 32, 2, mixer=["softmax"] * 3)
    with pytest.raises(ValueError, match="unknown mixer"):
        CausalLM(20, 32, 1, mixer="nope")


def test_length_and_token_errors():
    m = CausalLM(20, 16, 1, position="learned", max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    was = longseq.mixers.debug_enabled()
    longseq.set_debug(True)  # the range check reads ids back to the host: debug checks only
    try:
        with pytest.raises(ValueError, match=r"token ids must lie in \[0, 20\)"):
            m(torch.full((1, 3), 20))
    finally:
        longseq.set_debug(was)
    with pytest.raises(ValueError, match="learned"):
        CausalLM(20, 16, 1, position="learned")


def test_save_load_roundtrip(tmp_path):
    m = SequenceClassifier(20, 3, 32, 2, mixer="softmax", num_heads=2, pooling="last", position="rope")
    m.save(tmp_path)
    m2 = longseq.load(tmp_path)
    assert type(m2) is SequenceClassifier and m2.config == m.config
    ids = torch.randint(0, 20, (2, 9))
    assert torch.equal(m.eval()(ids), m2.eval()(ids))
    lm = CausalLM(20, 16, 1)  # tied embeddings survive the round trip
    lm.save(tmp_path / "lm")
    lm2 = longseq.load(tmp_path / "lm")
    assert lm2.lm_head.weight is lm2.backbone.embed.weight
    assert torch.equal(lm2.lm_head.weight, lm.lm_head.weight)


def test_saved_files_get_the_users_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        CausalLM(20, 16, 1).save(tmp_path)
    finally:
        os.umask(old)
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644, f  # not mkstemp's 0600


def test_load_rejects_truncated_tampered_and_corrupt(tmp_path):
    m = CausalLM(20, 16, 1)
    m.save(tmp_path)
    w = tmp_path / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated or modified"):
        longseq.load(tmp_path)
    w.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ValueError, match="truncated or modified"):
        longseq.load(tmp_path)
    w.write_bytes(good)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        longseq.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"class": "os.system", "config": {}, "weights_sha256": "x"}))
    with pytest.raises(ValueError, match="unknown model class"):
        longseq.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        longseq.load(tmp_path / "missing")
