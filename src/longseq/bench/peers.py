"""Peer implementations a user would otherwise install, behind the mixer shape contract.

Each peer is wrapped in a small adapter, ``[B, L, d_model] -> [B, L, d_model]`` with its own
input and output projections like a longseq mixer, built with the same ``d_model``, number of
heads and head size as its longseq *twin*, and with the twin's size setting (random features,
projected length, landmarks, window) read from the twin's registered default (or from the
options the user gives the twin), so that both do the same amount of work. Peers whose package
is not installed are skipped with a note (``pip install longseq[peers]``).

Peers are named after their pip package; each maps to its twin as follows (the adapter's own
projections are bias-free where the package allows, eval mode, no dropout):

* ``torch-sdpa`` -> ``softmax``: ``F.scaled_dot_product_attention`` between a fused qkv and an
  output Linear (what one writes with plain torch); no setting.
* ``performer-pytorch`` -> ``performer``: ``performer_pytorch.SelfAttention`` (FAVOR+ softmax
  kernel, orthogonal features); ``nb_features`` = the twin's ``num_features`` (both default to
  d_h ln d_h). Causal mode without the package's CUDA kernel runs its chunked CPU fallback.
  Its causal mode is not strictly causal: the key features are stabilised by the max over all
  keys, future ones included, which with the kernel's additive epsilon leaks a little of the
  future into past outputs (measured: 2e-4 for a +1 shift of later inputs, 0.3 for +100).
* ``linformer`` -> ``linformer``: ``linformer.LinformerSelfAttention``; ``k`` = the twin's
  ``k``, ``seq_len`` = L (the twin's ``max_len`` is set to L too); E, F shared across heads
  (the twin's "headwise" sharing). Bidirectional only.
* ``nystrom-attention`` -> ``nystromformer`` (when registered, else compared with ``softmax``
  only): ``nystrom_attention.NystromAttention``, ``num_landmarks`` from the twin or 256, the
  package's defaults otherwise (6 pseudo-inverse iterations, depthwise-conv skip of kernel 33).
  Bidirectional only.
* ``local-attention`` -> ``local``: ``local_attention.LocalMHA`` with ``window_size`` = the
  twin's ``window`` and the package's exact windows: causal, the last ``window`` tokens
  (blocks of ``window`` looking one block back); bidirectional, one block back and one ahead.
* ``pytorch-fast-transformers`` -> ``linear``: ``AttentionLayer`` over ``CausalLinearAttention``
  (causal) or ``LinearAttention``, feature map elu(x)+1 as the twin; no setting.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .speed import SpeedConfig, Target, mixer_targets, run_targets

__all__ = ["PEERS", "Peer", "available_peers", "build", "peer_targets", "run_peers", "PEER_PACKAGES"]


@dataclass(frozen=True)
class Peer:
    name: str
    module: str                      # import name whose presence makes the peer available
    package: str                     # pip name
    twin: str                        # longseq mixer it is compared with
    causal: bool
    bidirectional: bool
    setting: str | None              # the size option the adapter takes (mapped from the twin)
    twin_options: tuple = ()         # names the twin may give that setting, first found wins
    default: int | None = None       # used when the twin is absent or has none of twin_options
    note: str = ""


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("torch-sdpa", "torch", "torch", "softmax", True, True, None,
         note="torch.nn.functional.scaled_dot_product_attention between bias-free qkv/out projections"),
    Peer("performer-pytorch", "performer_pytorch", "performer-pytorch", "performer", True, True, "nb_features",
         ("num_features", "nb_features"), None,
         note="FAVOR+ softmax kernel; causal mode without the CUDA kernel uses the package's chunked "
              "fallback, and its key stabiliser (a max over all positions) lets future tokens change past "
              "outputs slightly"),
    Peer("linformer", "linformer", "linformer", "linformer", False, True, "k",
         ("k",), 256, note="seq_len = L; E, F shared across heads, separate for K and V (share_kv=False)"),
    Peer("nystrom-attention", "nystrom_attention", "nystrom-attention", "nystromformer", False, True,
         "num_landmarks", ("num_landmarks", "landmarks"), 256,
         note="6 pseudo-inverse iterations and the depthwise-conv skip (kernel 33): package defaults"),
    Peer("local-attention", "local_attention", "local-attention", "local", True, True, "window_size",
         ("window", "window_size"), 256,
         note="blocked windows: own + previous block (+ next when bidirectional), exact window in causal"),
    Peer("pytorch-fast-transformers", "fast_transformers", "pytorch-fast-transformers", "linear", True, True, None,
         note="linear attention, feature map elu+1; CausalLinearAttention when causal"),
]}

# What ``pip install longseq[peers]`` should bring (torch itself is a core dependency).
PEER_PACKAGES = sorted({p.package for p in PEERS.values() if p.package != "torch"})


def available_peers() -> dict[str, str | None]:
    """``{peer: None if installed else why it is skipped}``."""
    return {n: None if importlib.util.find_spec(p.module) is not None
            else f"package {p.package!r} is not installed (pip install longseq[peers])"
            for n, p in PEERS.items()}


# ---------------------------------------------------------------------------- adapters
class _SDPA(nn.Module):
    def __init__(self, d_model, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, L, Dh]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(o.transpose(1, 2).reshape(B, L, D))


class _Performer(nn.Module):
    def __init__(self, d_model, heads, causal, nb_features=None):
        super().__init__()
        from performer_pytorch import SelfAttention

        self.attn = SelfAttention(dim=d_model, heads=heads, dim_head=d_model // heads, causal=causal,
                                  nb_features=nb_features)

    def forward(self, x):
        return self.attn(x)


class _Linformer(nn.Module):
    def __init__(self, d_model, heads, seq_len, k=256):
        super().__init__()
        from linformer import LinformerSelfAttention

        self.attn = LinformerSelfAttention(dim=d_model, seq_len=seq_len, k=k, heads=heads)

    def forward(self, x):
        return self.attn(x)


class _Nystrom(nn.Module):
    def __init__(self, d_model, heads, num_landmarks=256):
        super().__init__()
        from nystrom_attention import NystromAttention

        self.attn = NystromAttention(dim=d_model, dim_head=d_model // heads, heads=heads,
                                     num_landmarks=num_landmarks)

    def forward(self, x):
        return self.attn(x)


class _Local(nn.Module):
    def __init__(self, d_model, heads, causal, window_size=256):
        super().__init__()
        from local_attention import LocalMHA

        self.attn = LocalMHA(dim=d_model, window_size=window_size, dim_head=d_model // heads, heads=heads,
                             causal=causal)

    def forward(self, x):
        return self.attn(x)


class _FastTransformersLinear(nn.Module):
    def __init__(self, d_model, heads, causal):
        super().__init__()
        from fast_transformers.attention import AttentionLayer, CausalLinearAttention, LinearAttention

        dh = d_model // heads
        attention = CausalLinearAttention(dh) if causal else LinearAttention(dh)
        self.attn = AttentionLayer(attention, d_model, heads)
        self.causal = causal

    def forward(self, x):
        from fast_transformers.masking import FullMask, LengthMask, TriangularCausalMask

        B, L, _ = x.shape
        mask = TriangularCausalMask(L, device=x.device) if self.causal else FullMask(L, device=x.device)
        lengths = LengthMask(torch.full((B,), L, dtype=torch.long, device=x.device), max_len=L, device=x.device)
        return self.attn(x, x, x, attn_mask=mask, query_lengths=lengths, key_lengths=lengths)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "torch-sdpa": lambda d, h, c, L, **o: _SDPA(d, h, c),
    "performer-pytorch": lambda d, h, c, L, **o: _Performer(d, h, c, **o),
    "linformer": lambda d, h, c, L, **o: _Linformer(d, h, L, **o),
    "nystrom-attention": lambda d, h, c, L, **o: _Nystrom(d, h, **o),
    "local-attention": lambda d, h, c, L, **o: _Local(d, h, c, **o),
    "pytorch-fast-transformers": lambda d, h, c, L, **o: _FastTransformersLinear(d, h, c),
}


def build(name: str, d_model: int, *, heads: int, causal: bool, seq_len: int, **options) -> nn.Module:
    """The adapter of peer ``name`` (``[B, L, d_model] -> [B, L, d_model]``)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}")
    p = PEERS[name]
    if causal and not p.causal:
        raise ValueError(f"peer {name!r} has no causal mode")
    return _BUILDERS[name](d_model, heads, causal, seq_len, **options)


# ---------------------------------------------------------------------------- targets
def _twin_setting(p: Peer, twin_options: dict) -> tuple[dict, str]:
    """The peer's size option mapped from its twin, and a sentence saying where it came from."""
    if p.setting is None:
        return {}, ""
    from .. import mixers

    given = dict(twin_options)
    defaults = mixers.spec(p.twin).cls.options() if p.twin in mixers.names() else {}
    for key in p.twin_options:
        for source, where in ((given, "given to"), (defaults, "default of")):
            if key not in source:
                continue
            if source[key] is None:  # the twin uses its own default rule, as the package does
                return {}, f"{p.setting}: package default ({key}=None {where} {p.twin})"
            return {p.setting: source[key]}, f"{p.setting}={source[key]} ({key} {where} {p.twin})"
    if p.default is None:
        return {}, f"{p.setting}: package default ({p.twin} not registered or without a matching option)"
    return {p.setting: p.default}, f"{p.setting}={p.default} (fallback; {p.twin} has no matching option)"


def _twin_flops_options(p: Peer, given: dict) -> dict:
    """The twin's options (defaults overridden by the user's) for evaluating its FLOPs formula."""
    from .. import mixers

    defaults = mixers.spec(p.twin).cls.options() if p.twin in mixers.names() else {}
    return defaults | dict(given)


def peer_targets(peer_names: list[str] | None, causal: bool, twin_options: dict | None = None) -> list[Target]:
    """Targets for peers (``None`` = all), each with its twin's setting and FLOPs; missing -> skipped."""
    from .. import mixers

    twin_options = twin_options or {}
    peer_names = list(PEERS) if peer_names is None else peer_names
    unknown = [n for n in peer_names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; peers: {', '.join(PEERS)}")
    avail = available_peers()
    registered = set(mixers.names())
    targets = []
    for n in peer_names:
        p = PEERS[n]
        opts, mapping = _twin_setting(p, twin_options.get(p.twin, {}))
        flops = mixers.spec(p.twin).flops if p.twin in registered else None
        skip = avail[n]
        if skip is None and causal and not p.causal:
            skip = "no causal mode (bidirectional only)"
        note = "; ".join(s for s in (p.note, mapping) if s)
        targets.append(Target(n, "peer", opts, twin=p.twin, flops=flops, skip_reason=skip, note=note,
                              twin_options=_twin_flops_options(p, twin_options.get(p.twin, {}))))
    return targets


def run_peers(peer_names: list[str] | None = None, config: SpeedConfig | None = None, *,
              twin_options: dict | None = None, twins: bool = True, log=None, on_update=None) -> dict:
    """Benchmark peers next to their longseq twins (those registered) and ``softmax``."""
    from .. import mixers

    cfg = config or SpeedConfig()
    peer = peer_targets(peer_names, cfg.causal, twin_options)
    names = []
    if twins:
        registered = set(mixers.names())
        names = list(dict.fromkeys(["softmax"] + [t.twin for t in peer if t.twin in registered]))
    own = mixer_targets(names, cfg.causal, {k: v for k, v in (twin_options or {}).items() if k in names})
    return run_targets(own + peer, cfg, kind="peers", log=log, on_update=on_update)
