"""The peer implementations themselves: the :class:`Peer` table and the adapters that wrap each
package behind the mixer shape contract (``[B, L, d_model] -> [B, L, d_model]``). Imported by the
benchmark worker (which builds them) and by :mod:`longseq.bench.peers` (which plans the runs);
it imports nothing else from longseq.bench, so the worker never imports the driver back. See
:mod:`longseq.bench.peers` for how each peer is matched to its longseq twin."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PEERS", "Peer", "available_peers", "build", "PEER_PACKAGES"]


@dataclass(frozen=True)
class Peer:
    name: str
    module: str  # import name whose presence makes the peer available
    package: str  # pip name
    twin: str  # longseq mixer it is compared with
    causal: bool
    bidirectional: bool
    setting: str | None  # the size option the adapter takes (mapped from the twin)
    twin_options: tuple = ()  # names the twin may give that setting, first found wins
    default: int | None = None  # used when the twin is absent or has none of twin_options
    note: str = ""


PEERS: dict[str, Peer] = {
    p.name: p
    for p in [
        Peer(
            "torch-sdpa",
            "torch",
            "torch",
            "softmax",
            True,
            True,
            None,
            note="torch.nn.functional.scaled_dot_product_attention between bias-free qkv/out projections",
        ),
        Peer(
            "performer-pytorch",
            "performer_pytorch",
            "performer-pytorch",
            "performer",
            True,
            True,
            "nb_features",
            ("num_features", "nb_features"),
            None,
            note="FAVOR+ softmax kernel; causal mode without the CUDA kernel uses the package's chunked "
            "fallback, and its key stabiliser (a max over all positions) lets future tokens change past "
            "outputs slightly",
        ),
        Peer(
            "linformer",
            "linformer",
            "linformer",
            "linformer",
            False,
            True,
            "k",
            ("k",),
            256,
            note="seq_len = L; E, F shared across heads, separate for K and V (share_kv=False)",
        ),
        Peer(
            "nystrom-attention",
            "nystrom_attention",
            "nystrom-attention",
            "nystromformer",
            False,
            True,
            "num_landmarks",
            ("num_landmarks", "landmarks"),
            256,
            note="6 pseudo-inverse iterations and the depthwise-conv skip (kernel 33): package defaults",
        ),
        Peer(
            "local-attention",
            "local_attention",
            "local-attention",
            "local",
            True,
            True,
            "window_size",
            ("window", "window_size"),
            256,
            note="blocked windows: own + previous block (+ next when bidirectional), exact window in causal",
        ),
        Peer(
            "pytorch-fast-transformers",
            "fast_transformers",
            "pytorch-fast-transformers",
            "linear",
            True,
            True,
            None,
            note="linear attention, feature map elu+1; CausalLinearAttention when causal",
        ),
    ]
}

# What ``pip install longseq[peers]`` should bring (torch itself is a core dependency).
PEER_PACKAGES = sorted({p.package for p in PEERS.values() if p.package != "torch"})


def available_peers() -> dict[str, str | None]:
    """``{peer: None if installed else why it is skipped}``."""
    return {
        n: None
        if importlib.util.find_spec(p.module) is not None
        else f"package {p.package!r} is not installed (pip install longseq[peers])"
        for n, p in PEERS.items()
    }


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

        self.attn = SelfAttention(
            dim=d_model, heads=heads, dim_head=d_model // heads, causal=causal, nb_features=nb_features
        )

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

        self.attn = NystromAttention(dim=d_model, dim_head=d_model // heads, heads=heads, num_landmarks=num_landmarks)

    def forward(self, x):
        return self.attn(x)


class _Local(nn.Module):
    def __init__(self, d_model, heads, causal, window_size=256):
        super().__init__()
        from local_attention import LocalMHA

        self.attn = LocalMHA(
            dim=d_model, window_size=window_size, dim_head=d_model // heads, heads=heads, causal=causal
        )

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
