"""Neural PCFG (Kim, Dyer & Rush 2019) with a full-rank and a rank-space inside algorithm.

Grammar (Chomsky normal form, Kim et al. 2019 Sec. 2): a root rule ``S -> A`` (A a nonterminal),
binary rules ``A -> B C`` (A in NT; B, C in S = NT + PT, children indexed nonterminals first,
then preterminals) and emissions ``T -> w`` (T in PT). No unary chains: a span of one word is a
preterminal, a longer span is a nonterminal, so a sentence needs at least two words.

Parameterisation.
* ``rank=None``: the "simple neural PCFG" of Kim et al. 2019 (their non-compound baseline; section
  and appendix details from memory, not re-checked against the paper text here): symbol embeddings w_N (dimension ``emb_dim``, 256 in the paper);
  ``p(S -> A) = softmax_A(u_A^T f_s(w_S))``, ``p(A -> B C) = softmax_{BC}(u_{BC}^T w_A + b_{BC})``
  (a linear map of the parent embedding onto all S^2 child pairs),
  ``p(T -> w) = softmax_w(u_w^T f_t(w_T))`` where f_s, f_t are MLPs with two residual layers
  (Linear-ReLU-Linear-ReLU plus skip), as we recall the paper's appendix and code.
* ``rank=r``: the tensor-decomposition PCFG (TD-PCFG, Yang, Zhao & Tu 2021, "PCFGs Can Do
  Better"): ``p(A -> B C) = sum_r U[A, r] V[B, r] W[C, r]`` with U row-stochastic
  (softmax over r) and V, W column-stochastic (softmax over the S symbols), which makes every row
  of the implied tensor sum to one. U, V, W come from the symbol embeddings through
  one-hidden-layer ReLU MLPs and a shared rank projection ``[emb_dim, r]`` (our choice of network;
  the paper leaves the exact MLP open). Root and emissions as in the full-rank model.

Inside algorithms (log-likelihood, Eq. 1 of Kim et al.):
* full rank, O(n^3 |NT| |S|^2) but split into the four child-type blocks (NT NT, NT PT, PT NT,
  PT PT): a preterminal covers exactly one word, so PT children appear only at splits next to a
  one-word span. For a span [i, j) of width w >= 2:
  ``beta(i,j,A) = sum_k sum_{B,C} p(A -> B C) beta(i,k,B) beta(k,j,C)`` (the CKY inside
  recursion); ``log p(x) = log sum_A p(S -> A) beta(0,n,A)``.
* rank space (Yang, Liu & Tu 2022, "Dynamic Programming in Rank Space", their PCFG case): with
  ``s(i,j) = sum_k (V^T beta(i,k)) * (W^T beta(k,j))`` in R^r we have ``beta(i,j) = U s(i,j)``,
  so the recursion never leaves rank space: the left/right projections of a span of width >= 2
  are ``s(i,j) @ (U^T V_NT)`` and ``s(i,j) @ (U^T W_NT)`` (two r x r matrices computed once per
  batch); of a word, ``e_i @ V_PT`` and ``e_i @ W_PT``. Cost O(n^3 r + n^2 r^2), independent of
  |NT| except for the root and the r x r products. This equals the TD-PCFG inside (Yang et al.
  2021), only reordered: the test ties it to the full-rank inside on the implied tensor.

Stability in float32 (n = 40): each chart entry is stored as a vector with max entry 1 and a log
scale (scaling, not log space: the inner products stay plain matrix products). When several split
points or child blocks are summed, their log scales are shifted by their maximum (detached: the
shift cancels exactly, so gradients are unaffected).

Parsing (``parse``): minimum-Bayes-risk trees: span marginals are the gradients of log p(x) with respect to an additive per-span log
weight (zero), then a CKY over spans maximises the sum of the marginals of the chosen spans.
Viterbi decoding of the neural grammar is not implemented here (the issue allows MBR or Viterbi).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PCFG", "inside_full", "inside_rank", "mbr_tree", "check_batch", "bench_pcfg"]


class _ResLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        return F.relu(self.lin2(F.relu(self.lin1(x)))) + x


def _mlp(dim: int, out: int) -> nn.Sequential:
    """Kim et al. 2019 App. A.1: Linear, two residual layers, Linear to the output logits."""
    return nn.Sequential(nn.Linear(dim, dim), _ResLayer(dim), _ResLayer(dim), nn.Linear(dim, out))


def check_batch(ids: torch.Tensor, lengths, vocab_size: int, max_length: int) -> torch.Tensor:
    """Validate ``ids [B, L]`` and ``lengths [B]``; returns lengths as an int64 tensor on ids' device."""
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ids must be an integer tensor [batch, length], got {getattr(ids, 'shape', type(ids))}")
    lengths = torch.as_tensor(lengths, device=ids.device).long()
    if lengths.shape != (ids.shape[0],):
        raise ValueError(f"lengths must have shape [{ids.shape[0]}], got {tuple(lengths.shape)}")
    if ids.shape[0] == 0:
        raise ValueError("empty batch: ids has no sentences")
    if int(lengths.min()) < 2:
        raise ValueError(
            f"sentence lengths must be >= 2 (a binary grammar derives no empty or one-word "
            f"sentence), got min length {int(lengths.min())}"
        )
    if int(lengths.max()) > ids.shape[1]:
        raise ValueError(f"a length ({int(lengths.max())}) exceeds the ids width {ids.shape[1]}")
    if int(lengths.max()) > max_length:
        raise ValueError(f"sentence length {int(lengths.max())} exceeds max_length={max_length}")
    pos = torch.arange(ids.shape[1], device=ids.device)
    real = pos[None, :] < lengths[:, None]
    bad = real & ((ids < 0) | (ids >= vocab_size))
    if bool(bad.any()):
        b, t = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"token id {int(ids[b, t])} at [{b}, {t}] is outside the vocabulary [0, {vocab_size})")
    return lengths


def _norm(vec: torch.Tensor, scale: torch.Tensor):
    """Rescale ``vec [..., K]`` to max entry 1, moving the factor into the log ``scale [...]``."""
    mx = vec.detach().amax(-1).clamp_min(1e-30)
    return vec / mx[..., None], scale + mx.log()


def _emissions(log_emission: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor):
    """Per-word preterminal likelihoods, scaled: (e [B, L, PT] with max 1, log scale [B, L]).
    Padding positions (t >= length) get e = 1, scale 0: no span of a sentence reaches them, and
    finite values there keep NaN out of the backward pass (0 * nan = nan)."""
    le = log_emission[:, ids.clamp(0, log_emission.shape[1] - 1)].permute(1, 2, 0)  # [B, L, PT]
    pad = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]  # [B, L]
    le = le.masked_fill(pad[..., None], 0.0)
    m = le.detach().amax(-1)
    return (le - m[..., None]).exp(), m


def inside_full(log_root, log_binary, log_emission, ids, lengths, span_weight=None):
    """log p(x) ``[B]`` by the full-rank inside algorithm (module docstring).

    ``log_root [NT]``, ``log_binary [NT, S, S]``, ``log_emission [PT, V]``; ``span_weight`` optional
    ``[B, L+1, L+1]`` additive log weights per span (zeros give marginals as gradients)."""
    B, L = ids.shape
    NT = log_root.shape[0]
    T = log_binary.exp()
    T_nn, T_np = T[:, :NT, :NT].reshape(NT, -1), T[:, :NT, NT:].reshape(NT, -1)
    T_pn, T_pp = T[:, NT:, :NT].reshape(NT, -1), T[:, NT:, NT:].reshape(NT, -1)
    e, se = _emissions(log_emission, ids, lengths)  # [B, L, P], [B, L]
    if span_weight is not None:
        se = se + span_weight[:, torch.arange(L), torch.arange(L) + 1]
    beta = e.new_zeros(B, L + 1, L + 1, NT)  # [B, i, j, NT]
    scale = e.new_zeros(B, L + 1, L + 1)
    for w in range(2, L + 1):
        I = L - w + 1
        i = torch.arange(I, device=ids.device)
        terms = []
        if w == 2:
            v = (e[:, :-1, :, None] * e[:, 1:, None, :]).reshape(B, I, -1) @ T_pp.t()
            terms.append((v, se[:, :-1] + se[:, 1:]))
        else:
            rgt = beta[:, i + 1, i + w]  # [B, I, NT]
            v = (e[:, :I, :, None] * rgt[:, :, None, :]).reshape(B, I, -1) @ T_pn.t()
            terms.append((v, se[:, :I] + scale[:, i + 1, i + w]))
            lft = beta[:, i, i + w - 1]
            v = (lft[:, :, :, None] * e[:, w - 1 :, None, :]).reshape(B, I, -1) @ T_np.t()
            terms.append((v, scale[:, i, i + w - 1] + se[:, w - 1 :]))
        if w >= 4:
            d = torch.arange(2, w - 1, device=ids.device)  # left widths
            k = i[:, None] + d[None, :]  # [I, D]
            lft, rgt = beta[:, i[:, None], k], beta[:, k, (i + w)[:, None]]  # [B, I, D, NT]
            s = scale[:, i[:, None], k] + scale[:, k, (i + w)[:, None]]  # [B, I, D]
            m = s.detach().amax(-1)
            wk = (s - m[..., None]).exp()
            outer = torch.einsum("bid,bidx,bidy->bixy", wk, lft, rgt).reshape(B, I, -1)
            terms.append((outer @ T_nn.t(), m))
        m = torch.stack([t[1] for t in terms]).detach().amax(0)  # [B, I]
        v = sum(t[0] * (t[1] - m).exp()[..., None] for t in terms)
        if span_weight is not None:
            m = m + span_weight[:, i, i + w]
        v, m = _norm(v, m)
        beta[:, i, i + w] = v
        scale[:, i, i + w] = m
    b = torch.arange(B, device=ids.device)
    top = beta[b, 0, lengths]  # [B, NT]
    return (top * log_root.exp()).sum(-1).log() + scale[b, 0, lengths]


def inside_rank(log_root, U, V, W, log_emission, ids, lengths, span_weight=None):
    """log p(x) ``[B]`` by the rank-space inside algorithm (module docstring).

    ``U [NT, r]`` (rows sum to 1), ``V, W [S, r]`` (columns sum to 1), NT first in S."""
    B, L = ids.shape
    NT, r = U.shape
    e, se = _emissions(log_emission, ids, lengths)
    if span_weight is not None:
        se = se + span_weight[:, torch.arange(L), torch.arange(L) + 1]
    UV, UW = U.t() @ V[:NT], U.t() @ W[:NT]  # [r, r]
    lp = e.new_zeros(B, L + 1, L + 1, r)  # left projections
    rp = e.new_zeros(B, L + 1, L + 1, r)  # right projections
    scale = e.new_zeros(B, L + 1, L + 1)
    ar = torch.arange(L, device=ids.device)
    lp[:, ar, ar + 1] = e @ V[NT:]
    rp[:, ar, ar + 1] = e @ W[NT:]
    scale[:, ar, ar + 1] = se
    s_top = e.new_zeros(B, r)
    sc_top = e.new_zeros(B)
    for w in range(2, L + 1):
        I = L - w + 1
        i = torch.arange(I, device=ids.device)
        d = torch.arange(1, w, device=ids.device)
        k = i[:, None] + d[None, :]  # [I, w-1]
        s = scale[:, i[:, None], k] + scale[:, k, (i + w)[:, None]]  # [B, I, w-1]
        m = s.detach().amax(-1)
        wk = (s - m[..., None]).exp()
        v = torch.einsum("bid,bidr,bidr->bir", wk, lp[:, i[:, None], k], rp[:, k, (i + w)[:, None]])
        if span_weight is not None:
            m = m + span_weight[:, i, i + w]
        v, m = _norm(v, m)  # s(i, i+w) [B, I, r]
        lp[:, i, i + w] = v @ UV
        rp[:, i, i + w] = v @ UW
        scale[:, i, i + w] = m
        done = lengths == w
        if bool(done.any()):
            s_top = torch.where(done[:, None], v[:, 0], s_top)
            sc_top = torch.where(done, m[:, 0], sc_top)
    return ((s_top @ U.t()) * log_root.exp()).sum(-1).log() + sc_top


def mbr_tree(marginals: np.ndarray, n: int) -> list[tuple[tuple[int, int]]]:
    """Binary tree over ``n`` words maximising the summed span ``marginals [>=n+1, >=n+1]`` (CKY).
    Returns ``longseq.trees`` constituents, root first (single words included). Ties: leftmost split."""
    best = np.zeros((n + 1, n + 1))
    split = np.zeros((n + 1, n + 1), dtype=np.int64)
    for w in range(2, n + 1):
        for i in range(n - w + 1):
            j = i + w
            cand = best[i, i + 1 : j] + best[i + 1 : j, j]
            k = int(np.argmax(cand))
            best[i, j] = marginals[i, j] + cand[k]
            split[i, j] = i + 1 + k
    out = []

    def walk(i, j):
        out.append(((i, j),))
        if j - i > 1:
            walk(i, int(split[i, j]))
            walk(int(split[i, j]), j)

    walk(0, n)
    return out


class PCFG(nn.Module):
    """``PCFG(num_nonterminals, num_preterminals, vocab_size, *, rank=None, emb_dim=256,
    max_length=40)``: see the module docstring. ``rank=None`` is the full-rank neural PCFG,
    ``rank=r`` the TD-PCFG with the rank-space inside algorithm."""

    def __init__(
        self,
        num_nonterminals: int,
        num_preterminals: int,
        vocab_size: int,
        *,
        rank: int | None = None,
        emb_dim: int = 256,
        max_length: int = 40,
    ):
        super().__init__()
        for name, v in (
            ("num_nonterminals", num_nonterminals),
            ("num_preterminals", num_preterminals),
            ("vocab_size", vocab_size),
            ("emb_dim", emb_dim),
            ("max_length", max_length),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"PCFG: {name} must be a positive int, got {v!r}")
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f"PCFG: rank must be None (full rank) or a positive int, got {rank!r}")
        self.NT, self.PT, self.V, self.rank, self.max_length = (
            num_nonterminals,
            num_preterminals,
            vocab_size,
            rank,
            max_length,
        )
        S = num_nonterminals + num_preterminals
        self.root_emb = nn.Parameter(torch.randn(1, emb_dim) * 0.1)
        self.nt_emb = nn.Parameter(torch.randn(num_nonterminals, emb_dim) * 0.1)
        self.t_emb = nn.Parameter(torch.randn(num_preterminals, emb_dim) * 0.1)
        self.root_mlp = _mlp(emb_dim, num_nonterminals)
        self.term_mlp = _mlp(emb_dim, vocab_size)
        if rank is None:
            self.rule_mlp = nn.Linear(emb_dim, S * S)
        else:
            self.rank_proj = nn.Parameter(torch.randn(emb_dim, rank) * emb_dim**-0.5)
            self.parent_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU())
            self.left_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU())
            self.right_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU())
        # Kim et al. 2019 (compound-pcfg code): every matrix, embeddings included, Xavier-uniform.
        for prm in self.parameters():
            if prm.dim() > 1:
                nn.init.xavier_uniform_(prm)

    # -- rules --------------------------------------------------------------------------------
    def _root_emission(self):
        log_root = self.root_mlp(self.root_emb).log_softmax(-1)[0]  # [NT]
        log_emission = self.term_mlp(self.t_emb).log_softmax(-1)  # [PT, V]
        return log_root, log_emission

    def factors(self):
        """Rank model only: ``(U [NT, r], V [S, r], W [S, r])`` (TD-PCFG, module docstring)."""
        if self.rank is None:
            raise ValueError("factors() exists only for a low-rank PCFG (rank=r)")
        sym = torch.cat([self.nt_emb, self.t_emb])  # [S, D]
        U = (self.parent_mlp(self.nt_emb) @ self.rank_proj).softmax(-1)
        V = (self.left_mlp(sym) @ self.rank_proj).softmax(0)
        W = (self.right_mlp(sym) @ self.rank_proj).softmax(0)
        return U, V, W

    def rules(self):
        """``(log_root [NT], log_binary [NT, S, S], log_emission [PT, V])``; for rank r the
        implied full tensor ``log sum_r U V W``."""
        log_root, log_emission = self._root_emission()
        S = self.NT + self.PT
        if self.rank is None:
            log_binary = self.rule_mlp(self.nt_emb).log_softmax(-1).view(self.NT, S, S)
        else:
            U, V, W = self.factors()
            log_binary = torch.einsum("ar,br,cr->abc", U, V, W).clamp_min(1e-38).log()
        return log_root, log_binary, log_emission

    # -- inference ----------------------------------------------------------------------------
    def _inside(self, ids, lengths, span_weight=None):
        if self.rank is None:
            log_root, log_binary, log_emission = self.rules()
            return inside_full(log_root, log_binary, log_emission, ids, lengths, span_weight)
        log_root, log_emission = self._root_emission()
        U, V, W = self.factors()
        return inside_rank(log_root, U, V, W, log_emission, ids, lengths, span_weight)

    def log_likelihood(self, ids: torch.Tensor, lengths) -> torch.Tensor:
        """log p(sentence) ``[B]`` for ``ids [B, L]`` (right-padded) and ``lengths [B]``."""
        lengths = check_batch(ids, lengths, self.V, self.max_length)
        return self._inside(ids[:, : int(lengths.max())], lengths)

    def span_marginals(self, ids: torch.Tensor, lengths) -> torch.Tensor:
        """``[B, L+1, L+1]``: posterior probability that span [i, j) is a constituent."""
        lengths = check_batch(ids, lengths, self.V, self.max_length)
        ids = ids[:, : int(lengths.max())]
        with torch.enable_grad():
            sw = torch.zeros(
                ids.shape[0],
                ids.shape[1] + 1,
                ids.shape[1] + 1,
                device=ids.device,
                dtype=self.root_emb.dtype,
                requires_grad=True,
            )
            ll = self._inside(ids, lengths, sw)
            (g,) = torch.autograd.grad(ll.sum(), sw)
        return g

    def parse(self, ids: torch.Tensor, lengths) -> list[list[tuple[tuple[int, int]]]]:
        """MBR binary trees: per sentence a list of ``longseq.trees`` constituents ``((i, j),)``."""
        marg = self.span_marginals(ids, lengths).detach().double().cpu().numpy()
        lengths = torch.as_tensor(lengths).tolist()
        return [mbr_tree(marg[b], int(n)) for b, n in enumerate(lengths)]


def bench_pcfg(
    num_nonterminals: int,
    rank: int | None,
    *,
    num_preterminals: int | None = None,
    vocab_size: int = 1000,
    batch_size: int = 4,
    length: int = 20,
    repeats: int = 3,
    emb_dim: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Time of one training step (inside + backward) of a PCFG on random sentences.

    ``num_preterminals`` defaults to 2 x nonterminals (Yang et al. 2021's NT:PT ratio).
    Returns ``{"num_nonterminals", "num_preterminals", "rank", "batch_size", "length",
    "seconds_per_batch" (median over ``repeats`` after one warm-up), "peak_mb" (CUDA only)}``."""
    import time

    torch.manual_seed(seed)
    pt = num_preterminals or 2 * num_nonterminals
    model = PCFG(num_nonterminals, pt, vocab_size, rank=rank, emb_dim=emb_dim, max_length=max(40, length)).to(device)
    ids = torch.randint(0, vocab_size, (batch_size, length), device=device)
    lengths = torch.full((batch_size,), length, device=device)
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for step in range(repeats + 1):
        t0 = time.perf_counter()
        loss = -model.log_likelihood(ids, lengths).mean()
        loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {
        "num_nonterminals": num_nonterminals,
        "num_preterminals": pt,
        "rank": rank,
        "batch_size": batch_size,
        "length": length,
        "seconds_per_batch": float(np.median(times)),
        "peak_mb": peak,
    }
