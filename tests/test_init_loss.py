"""A fresh model predicts close to uniform: its loss on uniform random tokens is within 10% of
ln(vocab) (the tied head was N(0, 1) x sqrt(d) logits: ~43 nats at V = 64 before the fix)."""

import math

import pytest
import torch

import longseq
from longseq.models import CausalLM, SequenceClassifier
from mixer_options import heads_for, options_for

torch.set_num_threads(1)
V, D, L = 64, 32, 48
CAUSAL = [n for n in longseq.mixers.names() if longseq.mixers.spec(n).causal]


def _loss(model, seed=0):
    ids = torch.randint(0, V, (8, L + 1), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.loss(model(ids[:, :-1]), ids[:, 1:]).item()


@pytest.mark.parametrize("name", CAUSAL)
def test_fresh_causal_lm_starts_near_ln_vocab(name):
    torch.manual_seed(0)
    m = CausalLM(V, D, 2, mixer=name, mixer_options=options_for(name), num_heads=heads_for(name)).eval()
    assert abs(_loss(m) / math.log(V) - 1) < 0.10


@pytest.mark.parametrize(
    "kw",
    [
        dict(tie_embeddings=False),
        dict(embedding="hsoftpos"),
        dict(embedding="hsoftpos", tie_embeddings=False),
        dict(scale_invariant=True),
        dict(position="learned", max_len=64),
        dict(position="sinusoidal"),
        dict(norm="rmsnorm", ffn="swiglu"),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_every_head_kind_starts_near_ln_vocab(kw):
    torch.manual_seed(0)
    m = CausalLM(V, D, 2, mixer="softmax", num_heads=2, **kw).eval()
    assert abs(_loss(m) / math.log(V) - 1) < 0.10


@pytest.mark.parametrize("d_model", [16, 256])
def test_tied_logit_scale_does_not_grow_with_width(d_model):
    torch.manual_seed(0)
    m = CausalLM(V, d_model, 1, mixer="softmax").eval()
    ids = torch.randint(0, V, (4, 16))
    with torch.no_grad():
        std = m(ids).std().item()
    assert 0.3 < std < 1.0  # sqrt(2/5) ~ 0.63 by construction (see CausalLM)


def test_fresh_classifier_starts_near_ln_classes():
    torch.manual_seed(0)
    m = SequenceClassifier(V, 10, D, 2, mixer="softmax", num_heads=2).eval()
    ids = torch.randint(0, V, (64, L))
    y = torch.randint(0, 10, (64,))
    with torch.no_grad():
        loss = m.loss(m(ids), y).item()
    assert abs(loss / math.log(10) - 1) < 0.10
