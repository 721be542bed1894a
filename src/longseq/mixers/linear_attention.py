"""Kernel (linear) attention: the Linear Transformer and the Performer (FAVOR+).

Both replace ``softmax(q k^T)`` by a product of non-negative feature maps ``phi(q) phi(k)^T``,
so that attention costs O(L) through the associativity ``phi(Q) (phi(K)^T V)``; the causal
form is a prefix sum, computed by the shared ops in :mod:`longseq.ops.linear_attention.chunk`
(chunk-parallel for sequences, the recurrence for single-token steps). The recurrent state is
``S = sum_j phi(k_j) v_j^T`` ([H, Dk, Dv]) and ``z = sum_j phi(k_j)`` ([H, Dk]) per sequence.

``linear``: Katharopoulos, Vyas, Pappas, Fleuret 2020, "Transformers are RNNs: Fast
Autoregressive Transformers with Linear Attention" (ICML 2020). Feature map ``elu(x) + 1``
(eq. 7), normalised attention (eq. 6), causal prefix sums (eq. 9-12) and the RNN form
(eq. 16-20). ``eps = 1e-6`` in the denominator as in the authors' code.

``performer``: Choromanski et al. 2021, "Rethinking Attention with Performers" (ICLR 2021).
FAVOR+ positive random features (Lemma 1): ``phi(x) = exp(w_r^T x - |x|^2 / 2) / sqrt(m)``,
r = 1..m, applied to ``x = q / d^(1/4)`` and ``k / d^(1/4)`` so that
``E[phi(q)^T phi(k)] = exp(q^T k / sqrt(d))`` (unbiased softmax kernel); ``w_r`` are orthogonal
random features (Section 2.4): blocks of ``d`` orthogonal directions (QR of a Gaussian matrix,
signs fixed so the directions are Haar-uniform) with lengths drawn from the chi(d)
distribution of Gaussian vector norms, so each ``w_r`` is marginally N(0, I_d).
``variant="relu"`` is the paper's generalised kernel (Section 2.3) with ``f = relu``:
``phi(x) = relu(W x) + 1e-3``, as the official JAX code (google-research ``performer/fast_attention/
jax/fast_attention.py``: ``make_fast_generalized_attention`` with ``kernel_fn=relu``,
``kernel_epsilon=0.001``, ``normalize_data=False``, so no ``d^(-1/4)`` scaling). The paper's
``1/sqrt(m)`` factor of eq. (5) is dropped there: it multiplies every feature alike and the
normalised attention cancels it, so it only sets the size of the ``1e-3`` stabiliser relative
to the features. The official TensorFlow code (``relu_kernel_transformation``) instead computes
``relu(W x / sqrt(m)) + 1e-3``, i.e. a stabiliser ``sqrt(m)`` times larger relative to the
features; longseq follows the JAX code, the one the generalised-attention experiments ran on.

Decisions for the Performer
---------------------------
* ``num_features`` defaults to ``round(d_head * ln(d_head))`` (the m = Theta(d log d) of the
  paper's theory, as in performer-pytorch); the paper's experiments use m = 256.
* One feature matrix ``[m, d_head]``, shared by all heads, is a (persistent) buffer. In
  training it is redrawn every ``redraw_interval`` forward passes (paper Section 4.2 / App. on
  redrawing); ``None`` = never. It is never redrawn in eval mode, nor by a forward that
  continues a recurrent state, and a state remembers the draw it was built with: using it
  after a redraw raises ``ValueError`` (its sums would mix two kernels).
* Numerical stabilisation: the query features are divided by their largest entry (a
  per-query constant, cancelled by the normalisation, as in the official code). Keys need one
  constant per (sequence, head): the largest key log-feature of the call (over real keys, as
  the official code's max over keys). In causal mode it is carried in the state as a running
  maximum: when a later chunk/step brings a larger one, ``S`` and ``z`` are rescaled by
  ``exp(m_old - m_new)`` (the online-softmax trick). So every feature is <= 1 (no overflow,
  even for inputs x100) and forward, prefill + steps, and split forwards agree.
* The denominator uses ``eps = 0`` (a query whose denominator underflows gets output 0), so
  that the stabiliser cancels exactly instead of entering through ``eps``. The official code instead adds
  ``1e-6`` to the denominator and ``1e-3`` inside the exponential features; without the
  latter, keys whose features all underflow simply contribute nothing.

Speed (no change to the function): the non-causal softmax-kernel Performer runs as one autograd
function, :func:`longseq.ops.favor.favor_attention_bidirectional` (features made block by block, in place, with a
hand-written backward); the feature map alone (causal path) is :func:`favor_softmax_features`, whose
backward keeps only the features.

RoPE (``rope=True``, both mixers): the rotary embedding is applied to ``q`` and ``k`` before the
feature map. For the Performer this gives an unbiased estimate of RoPE softmax attention
(rotations keep the kernel ``exp(q^T k)`` of the rotated vectors); for the Linear
Transformer it is the "rotate then map" variant (RoFormer's linear-attention variant instead
rotates ``phi(q), phi(k)`` in the numerator only, which can make the scores negative).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn.rotary import RotaryEmbedding
from ..ops.favor import favor_attention_bidirectional, favor_softmax_features
from ..ops.linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_recurrent,
)
from ..utils.validate import check_choice, check_int, check_optional
from .base import Mixer, register


def linear_attention_flops(
    L: int, d: int, h: int, causal: bool, chunk: int = 128, dk: int | None = None, n_keys: int = 1
) -> float:
    """Projections, feature contractions ``k^T v`` and ``q S``, plus the causal in-chunk matrices."""
    dh = d // h
    dk = dh if dk is None else dk
    proj = 2 * L * d * (3 + n_keys) * d
    core = 2 * 2 * L * dk * dh * h  # k^T v and q S
    if causal:
        core += 2 * L * min(chunk, L) * (dk + dh) * h / 2  # masked in-chunk q k^T and A v
    return float(proj + core)


def project_heads(
    qkv: torch.Tensor, num_heads: int, n_keys: int = 1, rope: RotaryEmbedding | None = None, offset: int = 0
):
    """Split a ``[B, L, (2 + M) D]`` projection into heads, RoPE applied to queries and keys.

    Returns q, v: ``[B, H, L, Dh]`` and k: ``[B, H, L, Dh]`` (M = 1) or ``[B, H, L, M, Dh]``.
    """
    q, k, v = rearrange(qkv, "b l (n h d) -> n b h l d", n=2 + n_keys, h=num_heads).split([1, n_keys, 1])
    q, v = q[0], v[0]  # [B, H, L, Dh]
    k = rearrange(k, "m b h l d -> b h l m d")  # [B, H, L, M, Dh]
    if rope is not None:
        q = rope(q, offset)
        k = rearrange(rope(rearrange(k, "b h l m d -> b (h m) l d"), offset), "b (h m) l d -> b h l m d", m=n_keys)
    return q, (k[:, :, :, 0] if n_keys == 1 else k), v


def _check_positive_int(name: str, value, allow_none: bool = False) -> None:
    if allow_none:
        check_optional(check_int, name, value, min=1)
    else:
        check_int(name, value, min=1)


class FeatureMapAttention(Mixer):
    """Shared machinery: projections, RoPE, padding, state and dispatch to the linear-attention ops.

    Subclasses implement ``_features(q, k, mask, state) -> (phi_q, phi_k, initial_state, extra)``
    with ``phi_k`` zero at padded keys; ``extra`` is merged into the new recurrent state.
    """

    eps = 1e-6

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        chunk_size: int = 128,
        rope: bool = False,
        bias: bool = False,
        n_keys: int = 1,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        _check_positive_int("chunk_size", chunk_size)
        self.chunk_size = chunk_size
        self.n_keys = n_keys
        self.qkv = nn.Linear(d_model, (2 + n_keys) * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None

    # -------------------------------------------------------------- pieces
    def _project(self, x, offset):
        return project_heads(self.qkv(x), self.num_heads, self.n_keys, self.rope, offset)

    def _features(self, q, k, mask, state):
        raise NotImplementedError

    def _feature_dim(self) -> int:
        return self.head_dim

    def _attend(self, fq, fk, v, initial, return_state):
        if not self.causal:
            return linear_attention_bidirectional(fq, fk, v, eps=self.eps), None
        if fq.shape[2] == 1:  # a single token: the RNN step (eq. 18-20)
            return linear_attention_recurrent(
                fq, fk, v, eps=self.eps, initial_state=initial, output_final_state=return_state
            )
        return linear_attention_chunk(
            fq, fk, v, chunk_size=self.chunk_size, eps=self.eps, initial_state=initial, output_final_state=return_state
        )

    # -------------------------------------------------------------- mixer contract
    def _forward(self, x, mask, state, return_state):
        offset = 0 if state is None else state["len"]
        q, k, v = self._project(x, offset)
        fq, fk, initial, extra = self._features(q, k, mask, state)
        o, final = self._attend(fq, fk, v, initial, return_state)  # [B, H, L, Dh]
        y = self.out(rearrange(o, "b h l d -> b l (h d)"))
        new_state = None
        if return_state:
            new_state = {"S": final[0], "z": final[1], "len": offset + x.shape[1], **extra}
        return y, new_state

    def _init_state(self, batch_size, device, dtype):
        H, Dk, Dv = self.num_heads, self._feature_dim(), self.head_dim
        return {
            "S": torch.zeros(batch_size, H, Dk, Dv, device=device, dtype=dtype),  # sum phi(k) v^T
            "z": torch.zeros(batch_size, H, Dk, device=device, dtype=dtype),  # sum phi(k)
            "len": 0,
        }

    def state_size(self, seq_len):
        return self.num_heads * self._feature_dim() * (self.head_dim + 1)

    def extra_repr(self):
        return super().extra_repr() + f", chunk_size={self.chunk_size}, rope={self.rope is not None}"


def _mask_keys(fk: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the features of padded keys. ``fk: [B, H, L, ...]``, ``mask: [B, L]``."""
    if mask is None:
        return fk
    m = mask[:, None, :].reshape(mask.shape[0], 1, mask.shape[1], *([1] * (fk.dim() - 3)))
    return fk * m.to(fk.dtype)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020, eq. 7): positive, ~x+1 for x > 0."""
    return F.elu(x) + 1.0


@register(
    "linear",
    family="kernel / linear attention",
    paper="Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
    complexity="O(N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=linear_attention_flops,
)
class LinearAttention(FeatureMapAttention):
    """Linear Transformer attention: ``phi = elu + 1``; chunk-parallel causal form, RNN ``step``.

    Options: ``chunk_size`` (causal chunk length, default 128), ``rope`` (rotary embedding on
    q, k before the feature map), ``bias`` (projection biases).
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        chunk_size: int = 128,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, chunk_size=chunk_size, rope=rope, bias=bias)

    def _features(self, q, k, mask, state):
        initial = None if state is None else (state["S"], state["z"])
        return elu_feature_map(q), _mask_keys(elu_feature_map(k), mask), initial, {}


# ---------------------------------------------------------------------------------- Performer
def draw_random_features(m: int, d: int, *, orthogonal: bool = True, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[m, d]`` random features, each row marginally N(0, I_d); orthogonal within blocks of d rows."""
    if not orthogonal:
        return torch.randn(m, d, device=device, dtype=torch.float64).to(dtype)
    gauss = torch.randn(math.ceil(m / d), d, d, device=device, dtype=torch.float64)
    Q, R = torch.linalg.qr(gauss)  # [n_blocks, d, d]
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]  # Haar-uniform columns
    directions = Q.transpose(-1, -2).reshape(-1, d)[:m]  # [m, d], unit rows
    lengths = torch.randn(m, d, device=device, dtype=torch.float64).norm(dim=1)  # chi(d)
    return (directions * lengths[:, None]).to(dtype)


def favor_relu_features(x: torch.Tensor, w: torch.Tensor, kernel_eps: float = 1e-3) -> torch.Tensor:
    """Generalised-kernel features ``relu(W x) + 1e-3`` (Performer Section 2.3, the official JAX
    code's ``generalized_kernel_feature_creator``): ``x [..., d]``, ``w [m, d]`` -> ``[..., m]``."""
    return F.relu(x @ w.T) + kernel_eps


def performer_flops(L, d, h, causal, chunk=128, num_features=None):
    dh = d // h
    m = num_features or _default_num_features(dh)
    return linear_attention_flops(L, d, h, causal, chunk, dk=m) + float(2 * 2 * L * dh * m * h)


def _default_num_features(head_dim: int) -> int:
    return max(1, round(head_dim * math.log(head_dim))) if head_dim > 1 else 1


@register(
    "performer",
    family="kernel / linear attention",
    paper="Choromanski et al. 2021, Rethinking Attention with Performers (FAVOR+)",
    complexity="O(N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=performer_flops,
    renamed={"kernel": "variant"},
)
class Performer(FeatureMapAttention):
    """FAVOR+ attention with positive orthogonal random features and scheduled feature redraws.

    Options: ``num_features`` (m; None = round(d_head ln d_head)), ``variant`` (the kernel
    approximated: "softmax" or "relu"), ``orthogonal`` (orthogonal random features, default True; False = i.i.d. Gaussian),
    ``redraw_interval`` (training forwards between redraws; None = never; default 1000),
    ``chunk_size``, ``rope``, ``bias``. See the module docstring for the decisions.
    """

    eps = 0.0  # the stabilisers cancel exactly; `_normalise` guards underflowing denominators

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        num_features: int | None = None,
        variant: str = "softmax",
        orthogonal: bool = True,
        redraw_interval: int | None = 1000,
        chunk_size: int = 128,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, chunk_size=chunk_size, rope=rope, bias=bias)
        check_choice("variant", variant, ("softmax", "relu"), owner="performer")
        check_optional(check_int, "num_features", num_features, min=1, owner="performer")
        check_optional(check_int, "redraw_interval", redraw_interval, min=1, owner="performer")
        self.kernel = variant
        self.orthogonal = bool(orthogonal)
        self.redraw_interval = redraw_interval
        self.num_features = num_features or _default_num_features(self.head_dim)
        self.register_buffer(
            "features", draw_random_features(self.num_features, self.head_dim, orthogonal=self.orthogonal)
        )  # [m, Dh]
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))  # redraws so far
        self.register_buffer("forwards_since_draw", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw a fresh random feature matrix (invalidates recurrent states built before)."""
        w = self.features
        self.features.copy_(
            draw_random_features(w.shape[0], w.shape[1], orthogonal=self.orthogonal, device=w.device, dtype=w.dtype)
        )
        self.draws += 1
        self.forwards_since_draw.zero_()

    def _forward(self, x, mask, state, return_state):
        if self.causal or self.kernel != "softmax":
            return super()._forward(x, mask, state, return_state)
        self._count_forward(state)
        q, k, v = self._project(x, 0)  # [B, H, L, Dh]
        o = favor_attention_bidirectional(q, k, v, self.features.to(q.dtype), mask)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), None

    def _count_forward(self, state):
        """Redraw the features every ``redraw_interval`` stateless training forwards."""
        if state is None and self.training and self.redraw_interval is not None:
            if int(self.forwards_since_draw) >= self.redraw_interval:
                self.redraw_features()
            self.forwards_since_draw += 1

    def _features(self, q, k, mask, state):
        self._count_forward(state)
        if state is not None and state["draw"] != int(self.draws):
            raise ValueError(
                "performer: the random features were redrawn after this state was built; "
                "start a new state (redraws happen only in training mode)"
            )
        w = self.features.to(q.dtype)
        extra = {"draw": int(self.draws)}
        if self.kernel == "relu":
            initial = None if state is None else (state["S"], state["z"])
            fk = _mask_keys(favor_relu_features(k, w), mask)
            return favor_relu_features(q, w), fk, initial, {**extra, "max": None}
        fq, _ = favor_softmax_features(q, w, is_query=True)
        prev_max = None if state is None else state["max"]
        fk, new_max = favor_softmax_features(k, w, is_query=False, mask=mask, running_max=prev_max)
        initial = None
        if state is not None:  # bring the carried sums to the new stabiliser
            scale = torch.exp(prev_max - new_max)  # [B, H], <= 1
            initial = (state["S"] * scale[..., None, None], state["z"] * scale[..., None])
        return fq, fk, initial, {**extra, "max": new_max}

    def _feature_dim(self):
        return self.num_features

    def _init_state(self, batch_size, device, dtype):
        state = super()._init_state(batch_size, device, dtype)
        state["draw"] = int(self.draws)
        state["max"] = (
            None
            if self.kernel == "relu"
            else torch.full((batch_size, self.num_heads), float("-inf"), device=device, dtype=dtype)
        )
        return state

    def state_size(self, seq_len):
        return super().state_size(seq_len) + self.num_heads

    def extra_repr(self):
        return (
            super().extra_repr() + f", num_features={self.num_features}, kernel={self.kernel!r}, "
            f"redraw_interval={self.redraw_interval}"
        )
