"""The default forward pass of the models makes no host synchronisation: the token-id range check
(which reads ids back to the host, stalling an accelerator's stream every step) runs only with
debug checks on, where a bad id still gets its ValueError.

A host sync is any read of a tensor's value into Python: ``item()``, ``bool()``/``int()``/``float()``,
``tolist()``, ``numpy()``. The test replaces those on ``torch.Tensor`` with functions that count the
calls while the forward runs (CPU, where the same calls would sync on a GPU)."""

import contextlib

import pytest
import torch

import longseq
from longseq.models import CausalLM, MaskedLM, SequenceClassifier
from longseq.models.backbone import check_token_ids

SYNCS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_syncs(monkeypatch):
    calls: list[str] = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _original=original, _name=name, **k):
            calls.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    try:
        yield calls
    finally:
        monkeypatch.undo()


@pytest.fixture
def debug_off():
    was = longseq.mixers.debug_enabled()
    longseq.set_debug(False)
    yield
    longseq.set_debug(was)


def _models(mixer):
    torch.manual_seed(0)
    return {
        "causal_lm": CausalLM(20, 16, 2, mixer=mixer, num_heads=2 if mixer != "s4d" else 1),
        "classifier": SequenceClassifier(20, 3, 16, 2, mixer=mixer, pooling="mean"),
        "masked_lm": MaskedLM(20, 16, 2, mixer=mixer) if mixer != "local" else None,
    }


def test_the_counter_sees_a_sync(monkeypatch, debug_off):
    """Guard against a test that cannot fail: the range check, when asked for, is counted."""
    ids = torch.randint(0, 20, (2, 7))
    with count_syncs(monkeypatch) as calls:
        check_token_ids(ids, 20, check_range=True)
    assert calls, "int(ids.min()) was not counted"
    longseq.set_debug(True)
    with count_syncs(monkeypatch) as calls:
        CausalLM(20, 16, 1, mixer="softmax")(ids)
    assert calls, "the debug forward should read the ids back"


@pytest.mark.parametrize("mixer", ["softmax", "s4d", "linear", "local"])
def test_default_forward_makes_no_host_sync(monkeypatch, debug_off, mixer):
    ids = torch.randint(0, 20, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    for name, model in _models(mixer).items():
        if model is None:
            continue
        with count_syncs(monkeypatch) as calls:
            out = model(ids, mask) if name != "causal_lm" else model(ids)
        assert not calls, f"{mixer} {name}: host syncs in the default forward: {calls}"
        assert torch.isfinite(out).all()
    lm = _models(mixer)["causal_lm"]
    with count_syncs(monkeypatch) as calls:  # the stateful (prefill) path too
        lm(ids, return_state=True)
    assert not calls, f"{mixer} stateful forward: {calls}"


def test_scale_invariant_backbone_default_forward_makes_no_host_sync(monkeypatch, debug_off):
    model = SequenceClassifier(20, 3, 16, 2, mixer="softmax", scale_invariant=True)
    ids = torch.randint(0, 20, (2, 9))
    with count_syncs(monkeypatch) as calls:
        model(ids)
    assert not calls, calls


@pytest.mark.parametrize("bad", [20, -1])
def test_bad_id_raises_with_debug_on(bad):
    was = longseq.mixers.debug_enabled()
    longseq.set_debug(True)
    try:
        ids = torch.randint(0, 20, (2, 5))
        ids[1, 3] = bad
        for model in (
            CausalLM(20, 16, 1, mixer="softmax"),
            SequenceClassifier(20, 3, 16, 1, mixer="softmax"),
            SequenceClassifier(20, 3, 16, 1, mixer="softmax", scale_invariant=True),
        ):
            with pytest.raises(ValueError, match=r"token ids must lie in \[0, 20\), got range"):
                model(ids)
    finally:
        longseq.set_debug(was)


def test_bad_id_without_debug_still_fails_in_the_embedding(debug_off):
    ids = torch.full((1, 4), 20)
    with pytest.raises(IndexError):
        CausalLM(20, 16, 1, mixer="softmax")(ids)


def test_wrong_dtype_or_rank_is_checked_without_debug(debug_off):
    with pytest.raises(ValueError, match="expected integer token ids of shape"):
        CausalLM(20, 16, 1, mixer="softmax")(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="expected integer token ids of shape"):
        CausalLM(20, 16, 1, mixer="softmax")(torch.zeros(4, dtype=torch.long))
