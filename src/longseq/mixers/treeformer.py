"""Treeformer (Madaan, Bhojanapalli, Jain, Jain, ICLR 2023, arXiv 2208.09015, "Treeformer: Dense
Gradient Trees for Efficient Attention Computation"): attention as nearest-neighbour retrieval
through a learned oblique decision tree per head.

Per head, a complete binary tree of height ``depth`` (h) has internal nodes n with a hyperplane
(w_n, b_n) over the head dimension. Queries and keys (after W_Q, W_K) are routed through the SAME
tree: at node n a vector x goes right iff ``w_n . x + b_n > 0`` (left otherwise), so each token
reaches one leaf of 2^h and has a root-to-leaf path of h + 1 nodes.

* ``treeformer_tf`` -- TF-ATTENTION (fine): query i attends with ordinary softmax attention only
  to the keys routed to its own leaf:
      o_i = sum_{j: leaf(k_j) = leaf(q_i)} softmax_j(q_i . k_j / sqrt(d_h)) v_j
* ``treeformer_tc`` -- TC-ATTENTION (coarse): every node n aggregates the keys and values that
  pass through it (k_n = mean of those k_j, v_n likewise; the root holds all keys); query i
  attends over the h + 1 nodes of its own path:
      o_i = sum_{n in path(q_i)} softmax_n(q_i . k_n / sqrt(d_h)) v_n
  Every key is in the root aggregate, so every key (and the tree) receives gradient: the "dense
  gradients" of the title.

Where the paper was readable and where it was not
-------------------------------------------------
Only the abstract, introduction and reviews of the paper were reachable from the offline index
(no official code is public there); the items below marked "our decision" are ours, consistent
with the abstract ("TF-Attention computes the attention in a fine-grained style [keys in the
same leaf], TC-Attention is a coarse attention layer which also ensures that the gradients are
dense [keys along the traversed path]", "a two-level bootstrapped training method") and with
DGT (Karthikeyan et al., "Learning Accurate Decision Trees with Bandit Feedback via Quantized
Gradient Descent"), the tree learner the paper builds on (hard routing forward, straight-through
gradients backward).

* Routing gradient (our decision, DGT-style straight-through): at each node on a token's path the chosen
  branch has the soft membership c = sigmoid(+-(w.x + b)) (+ for right). Its straight-through
  value ``1 + c - stop_grad(c)`` is exactly 1 in the forward pass and has the sigmoid's gradient
  backward; the product along the path up to node n is the token's membership g_n(x) (forward 1).
  The hard forward is therefore identical to plain hard routing, and memberships enter where a
  soft membership would:
    - TF: a key's unnormalised attention weight is g_leaf(k_j) exp(q_i.k_j/sqrt(d_h)) (keys gain
      or lose weight in their leaf), and the output is o_i * g_leaf(q_i) (a query's membership
      scales its leaf's answer, as DGT's leaf indicator scales the leaf prediction). Gradients to
      routings outside the taken path (other leaves) would need cross-leaf scores and are not
      computed, as in DGT's hard-path STE.
    - TC: node aggregates are membership-weighted means, k_n = sum_j g_n(k_j) k_j / sum_j g_n(k_j),
      and a query's weight on a path node is g_n(q_i) exp(q_i.k_n/sqrt(d_h)) (normalised over its
      path), so both sides of the routing get a gradient.
* Aggregation (our decision): means (not sums) of keys and values, so logits stay O(1) whatever the node
  size; plain softmax over the path nodes (no count weighting).
* Empty nodes (our decision): TF -- a query whose leaf holds no (real) key outputs 0 (the residual
  stream carries the token); TC -- path nodes without keys are excluded from the softmax (the
  root is never empty unless the whole sequence is padding, in which case the output is 0).
* Padded keys never enter a leaf (TF) or an aggregate (TC).
* Causal: not described by the paper, and neither layer has a prefix-consistent form (a leaf or
  node aggregate mixes past and future keys), so both are bidirectional only (our decision).
* Initialisation (our decision): w_n ~ N(0, 1/d_h) (|w.x| ~ 1 for unit-scale q/k), b_n = 0 (hyperplanes
  through the origin split roughly balanced at init). Projections as in ``softmax`` (same
  parameter names ``qkv``/``out``, so a dense-attention state dict loads into both layers).
* Depth default 4 (16 leaves) (our decision): the paper varies the height with the sequence length; with a
  fixed height TF costs O(N^2 / 2^h), so for long inputs choose h ~ log2(N / leaf size).
* Two-level bootstrapped training (our decision; the paper's text on it was not reachable): (1) start from dense
  attention weights and (2) train TC-attention, then switch the same weights to TF-attention.
  Two ways here: :func:`treeformer_bootstrap` converts a model's ``softmax`` (bidirectional) or
  TC layers into TF (or TC) layers in place, keeping q/k/v/out projections and trees; and the
  ``treeformer_tf`` option ``tc_steps=N`` runs TC-attention for the first N training forward
  passes of the layer and TF-attention afterwards, in training and evaluation alike (one run
  from the CLI: ``longseq train --mixer treeformer_tf --mixer-option tc_steps=600``). The counter
  is a buffer, so it survives checkpoints/resume; forward passes in eval mode do not count.

Cost
----
Routing: h gathers of one hyperplane per token, O(N h d). TC: segment sums by node id
(``index_add`` over [nodes] buckets) and a softmax over h + 1 path nodes: O(N h d) time; the
gathers of path-node keys/values run one level at a time inside two small autograd functions,
so memory is O(N (d + h)) plus the node tables, never [N, h + 1, d]. TF: keys and queries are
sorted by leaf; blocks of ``block_size`` sorted queries are paired only with the key blocks
that overlap their leaves' key ranges, and a segment softmax (scatter-max, ``index_add`` sums)
combines the pairs of a query block: time and memory O(N (leaf size + block_size) d), never an
N x N matrix (a degenerate tree that puts every key in one leaf costs as much as full
attention, as the method itself does). With a fixed depth the leaf size grows with N; scale the
depth with log2(N) to keep TF linear.

Speed and memory against ``softmax`` (SDPA) at L = 16K, and their growth with L, were measured
with scripts/bench_treeformer.py; the figures are in benchmarks/notes/2026-12-08-docstring-timings.md.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..ops.tree_routing import path_logits, path_mix
from ..utils.validate import check_int
from .base import Mixer, build, register

__all__ = ["route", "tf_attention", "tc_attention", "treeformer_bootstrap"]


def _tf_flops(L: int, d: int, h: int, causal: bool, depth: int = 4) -> float:
    """Projections, routing of q and k through ``depth`` hyperplanes, attention within leaves of
    a balanced tree (L / 2^depth keys each)."""
    keys = max(L / 2**depth, 1.0)
    return float(2 * L * d * 4 * d + 2 * L * 2 * depth * d + 2 * 2 * L * keys * d)


def _tc_flops(L: int, d: int, h: int, causal: bool, depth: int = 4) -> float:
    """Projections, routing, node sums of k and v, logits and mixing over depth + 1 path nodes."""
    return float(2 * L * d * 4 * d + 2 * L * 2 * depth * d + 4 * 2 * L * (depth + 1) * d)


# ---------------------------------------------------------------------------------- routing
def route(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, depth: int):
    """Route ``x: [B, H, L, Dh]`` through per-head trees ``w: [H, 2^h - 1, Dh]``, ``b: [H, 2^h - 1]``.

    Returns ``(nodes, member)``, both ``[B, H, L, h + 1]``: the heap index of the node at each
    level of the path (root 0, children of n are 2n + 1 / 2n + 2) and the straight-through
    membership g_n(x) (forward exactly 1, backward the gradient of the product of the chosen
    branches' sigmoids).
    """
    B, H, L, Dh = x.shape
    n_int = w.shape[1]
    head = (torch.arange(H, device=x.device) * n_int)[None, :, None]  # [1, H, 1] table offset
    xf, table, bias = x.reshape(-1, Dh), w.reshape(H * n_int, Dh), b.reshape(H * n_int)
    node = torch.zeros(B, H, L, dtype=torch.long, device=x.device)
    g = torch.ones(B, H, L, dtype=x.dtype, device=x.device)
    nodes, member = [node], [g]
    for _ in range(depth):
        idx = (node + head).reshape(-1, 1)  # [B*H*L, 1]
        s = (path_logits(xf, table, idx)[:, 0] + bias[idx[:, 0]]).view(B, H, L)
        right = s > 0
        c = torch.sigmoid(torch.where(right, s, -s))  # chosen branch
        g = g * (1.0 + (c - c.detach()))  # straight-through
        node = 2 * node + 1 + right.long()
        nodes.append(node)
        member.append(g)
    return torch.stack(nodes, -1), torch.stack(member, -1)


# ---------------------------------------------------------------------------------- TC
def _node_means(x, idx, weight, n_total):
    """Membership-weighted mean of ``x: [M, Dh]`` per node; ``idx``/``weight``: [M, P] -> [T, Dh], [T]."""
    x_sum = x.new_zeros(n_total, x.shape[1])
    w_sum = weight.new_zeros(n_total).index_add(0, idx.flatten(), weight.flatten())
    for n in range(idx.shape[1]):  # one level at a time: O(M Dh) temporaries
        x_sum = x_sum.index_add(0, idx[:, n], weight[:, n, None] * x)
    # forward: integer key counts; empty nodes (count 0) are masked by the caller
    return x_sum / w_sum.clamp_min(1.0)[:, None], w_sum


def tc_attention(q, k, v, q_nodes, q_member, k_nodes, k_member, key_mask, n_nodes: int):
    """TC-attention over path-node aggregates. q/k/v: [G, L, Dh]; *_nodes/*_member: [G, L, h+1];
    key_mask: [G, L] bool (True = real key) or None. Returns [G, L, Dh]."""
    G, L, Dh = q.shape
    offset = (torch.arange(G, device=q.device) * n_nodes)[:, None, None]  # [G, 1, 1]
    k_idx = (k_nodes + offset).flatten(0, 1)  # [G*L, h+1] global node ids
    q_idx = (q_nodes + offset).flatten(0, 1)
    wk = k_member if key_mask is None else k_member * key_mask[..., None].to(k_member.dtype)
    wk = wk.flatten(0, 1)
    # segment sums by node id -> mean key / value of every node: [G * n_nodes, Dh]
    k_bar, count = _node_means(k.flatten(0, 1), k_idx, wk, G * n_nodes)
    v_bar, _ = _node_means(v.flatten(0, 1), k_idx, wk, G * n_nodes)

    empty = count.detach()[q_idx] == 0  # [G*L, h+1]
    logits = path_logits(q.flatten(0, 1), k_bar, q_idx) * Dh**-0.5
    logits = logits.masked_fill(empty, float("-inf"))
    m = logits.detach().amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = q_member.flatten(0, 1) * torch.exp(logits - m)  # [G*L, h+1]
    z = e.sum(-1, keepdim=True)
    p = e / torch.where(z > 0, z, torch.ones_like(z))
    return path_mix(p, v_bar, q_idx).view(G, L, Dh)


# ---------------------------------------------------------------------------------- TF
def _pad_to(x: torch.Tensor, n: int, value) -> torch.Tensor:
    pad = n - x.shape[1]
    if pad == 0:
        return x
    shape = (x.shape[0], pad) + tuple(x.shape[2:])
    return torch.cat([x, x.new_full(shape, value)], 1)


def tf_attention(q, k, v, q_leaf, q_member, k_leaf, k_member, mask, n_leaves: int, block_size: int):
    """TF-attention: softmax over the keys of the query's leaf. q/k/v: [G, L, Dh]; *_leaf: [G, L]
    leaf ids in [0, n_leaves); *_member: [G, L]; mask: [G, L] bool (True = real token) or None:
    padded tokens are neither keys nor (computed) queries. Returns [G, L, Dh].

    Keys and queries are sorted by leaf; query block b (``block_size`` sorted queries) is paired
    with every key block overlapping the key range of its leaves; scores [P, C, C] of the P pairs
    are combined per query block by a segment softmax (max by scatter_reduce, sums by index_add).
    """
    G, L, Dh = q.shape
    C = block_size
    Lp = -(-L // C) * C
    nb = Lp // C
    no_key, no_query = n_leaves, n_leaves + 1  # sentinels: never equal to each other
    if mask is not None:
        k_leaf = torch.where(mask, k_leaf, torch.full_like(k_leaf, no_key))
        q_leaf = torch.where(mask, q_leaf, torch.full_like(q_leaf, no_query))

    # sort by leaf (stable: ties keep sequence order)
    k_leaf_s, k_ord = torch.sort(_pad_to(k_leaf, Lp, no_key), dim=1, stable=True)  # [G, Lp]
    q_leaf_s, q_ord = torch.sort(_pad_to(q_leaf, Lp, no_query), dim=1, stable=True)
    gather3 = lambda t, idx: torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, Dh))  # noqa: E731
    k_s = gather3(_pad_to(k, Lp, 0.0), k_ord)  # [G, Lp, Dh]
    v_s = gather3(_pad_to(v, Lp, 0.0), k_ord)
    q_s = gather3(_pad_to(q, Lp, 0.0), q_ord)
    km_s = torch.gather(_pad_to(k_member, Lp, 1.0), 1, k_ord)  # [G, Lp]

    # key range [start, end) of each query's leaf in the sorted keys, then per query block
    start = torch.searchsorted(k_leaf_s, q_leaf_s, right=False)  # [G, Lp]
    end = torch.searchsorted(k_leaf_s, q_leaf_s, right=True)
    end = torch.where(q_leaf_s == no_query, torch.zeros_like(end), end)  # no range for padding
    start_b = start.view(G, nb, C)[:, :, 0]  # sorted leaves => ranges are sorted
    end_b = end.view(G, nb, C).amax(-1)
    kb0 = torch.div(start_b, C, rounding_mode="floor")
    n_kb = torch.where(end_b > start_b, -(-end_b // C) - kb0, torch.zeros_like(kb0))  # [G, nb]

    # (query block, key block) pairs, flattened over groups
    n_kb = n_kb.flatten()
    qb = torch.repeat_interleave(torch.arange(G * nb, device=q.device), n_kb)  # [P]
    first = torch.cumsum(n_kb, 0) - n_kb
    kb = kb0.flatten()[qb] + torch.arange(qb.numel(), device=q.device) - first[qb]
    kb = kb + torch.div(qb, nb, rounding_mode="floor") * nb  # global id

    Qp = q_s.reshape(G * nb, C, Dh)[qb]  # [P, C, Dh]
    Kp = k_s.reshape(G * nb, C, Dh)[kb]
    Vp = v_s.reshape(G * nb, C, Dh)[kb]
    same = q_leaf_s.reshape(G * nb, C)[qb][:, :, None] == k_leaf_s.reshape(G * nb, C)[kb][:, None, :]
    scores = torch.einsum("pid,pjd->pij", Qp, Kp) * Dh**-0.5  # [P, C, C]
    scores = scores.masked_fill(~same, float("-inf"))

    # segment softmax over all pairs of a query block
    row_max = scores.detach().amax(-1)  # [P, C]
    m = row_max.new_full((G * nb, C), float("-inf"))
    m = m.scatter_reduce(0, qb[:, None].expand(-1, C), row_max, "amax", include_self=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m[qb][:, :, None]) * km_s.reshape(G * nb, C)[kb][:, None, :]
    z = q.new_zeros(G * nb, C).index_add(0, qb, e.sum(-1))
    num = q.new_zeros(G * nb, C, Dh).index_add(0, qb, torch.einsum("pij,pjd->pid", e, Vp))
    o_s = (num / torch.where(z > 0, z, torch.ones_like(z))[..., None]).reshape(G, Lp, Dh)

    # back to sequence order; a query's membership scales its leaf's answer
    o = torch.zeros_like(o_s).scatter(1, q_ord.unsqueeze(-1).expand(-1, -1, Dh), o_s)[:, :L]
    return o * q_member[..., None]


# ---------------------------------------------------------------------------------- mixers
class _Treeformer(Mixer):
    """Shared projections and per-head trees of the two Treeformer layers."""

    def __init__(
        self, d_model: int, *, num_heads: int = 1, causal: bool = False, depth: int = 4, bias: bool = False
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        name = self.spec.name
        if causal:
            raise ValueError(f"{name}: no causal mode (a tree leaf/node mixes past and future keys)")
        check_int("depth", depth, min=1, max=20, owner=name)
        self.depth = depth
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        n_internal = 2**depth - 1
        self.tree_w = nn.Parameter(torch.randn(num_heads, n_internal, self.head_dim) / math.sqrt(self.head_dim))
        self.tree_b = nn.Parameter(torch.zeros(num_heads, n_internal))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth={self.depth}"

    def _project_and_route(self, x, mask):
        """-> q, k, v [B*H, L, Dh]; path node ids and memberships [B*H, L, h+1]; mask [B*H, L] | None."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        q_route = route(q, self.tree_w, self.tree_b, self.depth)  # [B, H, L, h+1] x 2
        k_route = route(k, self.tree_w, self.tree_b, self.depth)
        flat = [t.flatten(0, 1) for t in (q, k, v, *q_route, *k_route)]
        if mask is not None:
            mask = mask.repeat_interleave(self.num_heads, 0)
        return (*flat, mask)

    def _attend_tc(self, x, mask):
        q, k, v, qn, qm, kn, km, mask = self._project_and_route(x, mask)
        o = tc_attention(q, k, v, qn, qm, kn, km, mask, 2 ** (self.depth + 1) - 1)  # [B*H, L, Dh]
        return self.out(rearrange(o, "(b h) l d -> b l (h d)", h=self.num_heads))

    def _attend_tf(self, x, mask, block_size):
        q, k, v, qn, qm, kn, km, mask = self._project_and_route(x, mask)
        first_leaf = 2**self.depth - 1  # heap id of leaf 0
        o = tf_attention(
            q,
            k,
            v,
            qn[..., -1] - first_leaf,
            qm[..., -1],
            kn[..., -1] - first_leaf,
            km[..., -1],
            mask,
            2**self.depth,
            block_size,
        )  # [B*H, L, Dh]
        return self.out(rearrange(o, "(b h) l d -> b l (h d)", h=self.num_heads))


@register(
    "treeformer_tc",
    family="learned sparse attention",
    paper="Madaan et al. 2023, Treeformer: Dense Gradient Trees for Efficient Attention Computation (TC-attention)",
    complexity="O(N h)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=_tc_flops,
)
class TreeformerTC(_Treeformer):
    """TC-attention: each query attends over the mean keys/values of the h + 1 nodes on its path."""

    def __init__(
        self, d_model: int, *, num_heads: int = 1, causal: bool = False, depth: int = 4, bias: bool = False
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, depth=depth, bias=bias)

    def _forward(self, x, mask, state, return_state):
        return self._attend_tc(x, mask), None


@register(
    "treeformer_tf",
    family="learned sparse attention",
    paper="Madaan et al. 2023, Treeformer: Dense Gradient Trees for Efficient Attention Computation (TF-attention)",
    complexity="O(N (h + N/2^h))",
    causal=False,
    bidirectional=True,
    step=False,
    flops=_tf_flops,
)
class TreeformerTF(_Treeformer):
    """TF-attention: each query attends to the keys of its own leaf; ``tc_steps`` bootstraps from TC."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        depth: int = 4,
        block_size: int = 64,
        tc_steps: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, depth=depth, bias=bias)
        check_int("block_size", block_size, min=1, owner="treeformer_tf")
        check_int("tc_steps", tc_steps, min=0, owner="treeformer_tf")
        self.block_size = block_size
        self.tc_steps = tc_steps
        # training forward passes run so far (drives the TC -> TF bootstrap; saved in checkpoints)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", block_size={self.block_size}, tc_steps={self.tc_steps}"

    def _forward(self, x, mask, state, return_state):
        in_bootstrap = self.tc_steps > 0 and int(self.train_steps) < self.tc_steps
        if self.training:
            self.train_steps += 1
        if in_bootstrap:
            return self._attend_tc(x, mask), None
        return self._attend_tf(x, mask, self.block_size), None


# ---------------------------------------------------------------------------------- bootstrap
def treeformer_bootstrap(model: nn.Module, target: str = "treeformer_tf", **options) -> nn.Module:
    """Bootstrapped training, in place: replace every bidirectional ``softmax``/``softmax_naive``
    layer and every Treeformer layer of ``model`` by a ``target`` layer (``treeformer_tf`` or
    ``treeformer_tc``) carrying over the q/k/v/out projections and, from Treeformer layers, the
    trees. ``options`` (``depth``, ``block_size``, ...) go to the new layers; ``depth`` defaults
    to the source layer's. Returns ``model``.

    Recipe (train dense or TC, then TF from the same weights)::

        model = build_model(..., mixer="treeformer_tc"); train(model)
        treeformer_bootstrap(model, "treeformer_tf"); train(model)
    """
    from .softmax import SoftmaxAttention

    if target not in ("treeformer_tf", "treeformer_tc"):
        raise ValueError(f"treeformer_bootstrap: target must be 'treeformer_tf' or 'treeformer_tc', got {target!r}")
    swaps = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, _Treeformer) or (isinstance(child, SoftmaxAttention) and not child.causal):
                swaps.append((parent, child_name, child))
    if not swaps:
        raise ValueError("treeformer_bootstrap: the model has no bidirectional softmax or Treeformer layer")
    for parent, child_name, old in swaps:
        opts = dict(options)
        if isinstance(old, _Treeformer):
            opts.setdefault("depth", old.depth)
        new = build(target, old.d_model, num_heads=old.num_heads, bias=old.qkv.bias is not None, **opts)
        new = new.to(device=old.qkv.weight.device, dtype=old.qkv.weight.dtype)
        source = {k: t for k, t in old.state_dict().items() if k.split(".")[0] in ("qkv", "out", "tree_w", "tree_b")}
        if "tree_w" in source and source["tree_w"].shape != new.tree_w.shape:
            raise ValueError(f"treeformer_bootstrap: depth {new.depth} differs from the source layer's {old.depth}")
        new.load_state_dict(source, strict=False)
        new.train(old.training)
        setattr(parent, child_name, new)
    return model
