"""Restricted probabilistic LCFRS-2 with a rank-space inside algorithm (Yang, Levy & Kim 2023,
"Unsupervised Discontinuous Constituency Parsing with Mildly Context-Sensitive Grammars", ACL).

Spans. A continuous item covers [i, j); a discontinuous item (i, j, k, l), i < j < k < l, covers
the two blocks [i, j) and [k, l) with a non-empty gap [j, k). Symbols: ``num_nonterminals`` (m)
continuous nonterminals, ``num_discontinuous`` (d) discontinuous ones (fan-out 2), and
``num_preterminals`` (p) preterminals (one word each); S_c = m + p continuous symbols, indexed
nonterminals first.

Rule set (binary LCFRS of fan-out 2, restricted as in the paper and its official code,
``sustcsonglin/TN-LCFRS``, ``parser/pcfgs/lcfrs_on5_cpd.py``, whose decoder enumerates exactly
these derivation steps; we read that code and reimplemented the recursion):

  continuous parent A (A in m):
    (1) A(xy)   <- B(x) C(y)          B, C in S_c         O(n^3)   [plain CFG rule]
    (2) A(xyz)  <- D(x, z) C(y)       D in d, C in S_c    O(n^4)   [C fills D's gap exactly]
  discontinuous parent D (D in d), blocks x..., ...z:
    (3) D(x, y)  <- B(x) C(y)         B, C in S_c         O(n^4)   [creates a gap]
    (4) D(xy, z) <- C(x) E(y, z)      E in d, C in S_c    O(n^5)   [C left of the first block]
    (5) D(xy, z) <- E(x, z) C(y)                          O(n^5)   [C right of the first block]
    (6) D(x, yz) <- E(x, z) C(y)                          O(n^5)   [C left of the second block]
    (7) D(x, yz) <- E(x, y) C(z)                          O(n^5)   [C right of the second block]
  root S -> A (A in m), emissions T -> w.

Dropped (the paper's reasoning, from its abstract: full binary LCFRS-2 parsing is O(n^6) and they
"further discard rules that require O(n^6) time to parse, reducing inference to O(n^5)"): every
rule with *two* discontinuous children (e.g. A(x1 y1 x2 y2) <- B(x1, x2) C(y1, y2), or a
discontinuous parent whose blocks interleave two discontinuous children), which need six span
boundaries, and continuous children that would leave a fan-out-3 parent. A gap must be filled
in one step by exactly one continuous child (rule 2) or shrunk from its edges by rules 5-6. (The
list of dropped shapes is our reading of which binary fan-out-2 rules are absent from that
decoder; we did not find the paper's own enumeration in this session.)

Rule probabilities (rank-space / CP decomposition with embeddings, as in the paper): each parent
kind has its own decomposition so that every parent's distribution over *all* its rule types is
normalised:
  continuous:    p(A -> B C) = sum_r Uc[A,r] Lc[B,r] Wc[C,r] (rule 1, B in S_c) and
                 p(A -> D C) = sum_r Uc[A,r] Lc[m+p+D,r] Wc[C,r] (rule 2);
                 Uc rows and Lc [S_c + d, r], Wc [S_c, r] columns are softmax-normalised, so
                 sum over rules 1 and 2 of p(A -> .) = 1.
  discontinuous: p(D -> B C) = sum_r Ud[D,r] Ld[B,r] Wd[C,r] (rule 3) and
                 p(D -> E C, type q) = sum_r Ud[D,r] Ld[S_c + q d + E, r] Wd[C,r] (rules 4-7, q = 0..3).
Factors come from symbol embeddings (plus one embedding per attachment type q) through ReLU
layers and a rank projection, as for the TD-PCFG (:mod:`longseq.structured.pcfg`); the exact
networks are our choice (the paper: "embedding-based parameterization", details in its code).
Root and emissions as in Kim et al. 2019. ``rules()`` materialises the implied dense tensors.

Rank-space inside: every item stores its r-dimensional pre-U vector (s_c for continuous items,
s_d for discontinuous ones: beta_c = Uc s_c, beta_d = Ud s_d) and the projections its parents
need (e.g. Lc^T beta_c = s_c @ (Uc^T Lc[:m])), so the recursion costs O(n^5 r) + O(n^4 r^2) and
never touches the m / d dimensions except through r x r matrices. Items are processed by total
covered width; each is stored scaled (max entry 1) with a log scale, terms of one parent are
combined after shifting by their largest scale (detached), so float32 does not underflow.

Parsing: MBR over the same derivation space (as the official code's decoder): span marginals
(continuous and discontinuous) from autograd, then a DP maximising the summed marginals.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn

from .pcfg import _emissions, _mlp, _norm, check_batch

__all__ = ["LCFRS2", "inside_lcfrs", "chart_layout", "mbr_lcfrs"]


@lru_cache(maxsize=16)
def chart_layout(L: int):
    """Index tables for sentences of (padded) length ``L``.

    Returns ``(items, by_width)``: ``items`` the discontinuous items (i, j, k, l) in order (their
    position is their chart index); ``by_width[w]`` a dict of int64 numpy arrays for total width w:
      ``d_items`` [P_d] chart indices of the discontinuous items of width w;
      ``split`` [P_d, 4] (i, j, k, l) for rule 3;
      ``att`` [T, 5] (local parent, q, child item, a, b) with the continuous child [a, b);
      ``c_spans`` [P_c, 2] the continuous spans (i, i + w);
      ``cc`` [T, 4] (local parent, i, j, l): children [i, j) and [j, l) (rule 1);
      ``fill`` [T, 4] (local parent, child item, a, b): gap filler [a, b) (rule 2)."""
    items = [
        (i, j, k, l) for i in range(L) for j in range(i + 1, L) for k in range(j + 1, L) for l in range(k + 1, L + 1)
    ]
    index = {it: n for n, it in enumerate(items)}
    by_width = {}
    for w in range(2, L + 1):
        d_items, split, att = [], [], []
        for i, j, k, l in items:
            if (j - i) + (l - k) != w:
                continue
            p = len(d_items)
            d_items.append(index[(i, j, k, l)])
            split.append((i, j, k, l))
            for s in range(i + 1, j):
                att.append((p, 0, index[(s, j, k, l)], i, s))
                att.append((p, 1, index[(i, s, k, l)], s, j))
            for s in range(k + 1, l):
                att.append((p, 2, index[(i, j, s, l)], k, s))
                att.append((p, 3, index[(i, j, k, s)], s, l))
        c_spans, cc, fill = [], [], []
        for i in range(L - w + 1):
            p, l = len(c_spans), i + w
            c_spans.append((i, l))
            cc += [(p, i, j, l) for j in range(i + 1, l)]
            fill += [(p, index[(i, a, b, l)], a, b) for a in range(i + 1, l) for b in range(a + 1, l)]
        mk = lambda x, c: np.asarray(x, np.int64).reshape(-1, c)  # noqa: E731
        by_width[w] = dict(
            d_items=mk(d_items, 1)[:, 0],
            split=mk(split, 4),
            att=mk(att, 5),
            c_spans=mk(c_spans, 2),
            cc=mk(cc, 4),
            fill=mk(fill, 4),
        )
    return items, by_width


def _combine(parent: torch.Tensor, n_parent: int, vals: list[torch.Tensor], scales: list[torch.Tensor]):
    """Sum scaled terms into their parents: ``parent [T]`` local parent index per term, ``vals``
    pieces ``[B, T_i, r]`` and ``scales`` ``[B, T_i]`` (concatenated in order). Returns the
    normalised ``(vec [B, P, r], log scale [B, P])``."""
    v, s = torch.cat(vals, 1), torch.cat(scales, 1)
    B = v.shape[0]
    m = s.new_full((B, n_parent), -float("inf")).scatter_reduce(
        1, parent.unsqueeze(0).expand(B, -1), s.detach(), "amax", include_self=True
    )
    w = (s - m[:, parent]).exp()
    out = v.new_zeros(B, n_parent, v.shape[-1]).index_add(1, parent, v * w[..., None])
    return _norm(out, m)


def inside_lcfrs(log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission, ids, lengths, span_weight=None):
    """log p(x) ``[B]`` by the rank-space LCFRS-2 inside algorithm (module docstring).

    ``Uc [m, rc]``, ``Lc [m+p+d, rc]``, ``Wc [m+p, rc]``, ``Ud [d, rd]``, ``Ld [m+p+4d, rd]``,
    ``Wd [m+p, rd]``; ``span_weight`` optional ``(cont [B, L+1, L+1], disc [B, n_items])`` additive
    log weights (zeros: gradients are the span marginals)."""
    B, L = ids.shape
    m, d = Uc.shape[0], Ud.shape[0]
    Sc = Wc.shape[0]
    rc, rd = Uc.shape[1], Ud.shape[1]
    dev = ids.device
    items, layout = chart_layout(L)
    nI = len(items)
    # r x r maps from an item's pre-U vector to the projections its parents use
    c2cl, c2cr = Uc.t() @ Lc[:m], Uc.t() @ Wc[:m]  # [rc, rc]
    c2dl, c2dw = Uc.t() @ Ld[:m], Uc.t() @ Wd[:m]  # [rc, rd]
    d2fill = Ud.t() @ Lc[Sc:]  # [rd, rc]
    d2att = torch.einsum("dr,qds->qrs", Ud, Ld[Sc:].view(4, d, rd))  # [4, rd, rd]
    e, se = _emissions(log_emission, ids, lengths)  # [B, L, p], [B, L]
    ar = torch.arange(L, device=dev)
    if span_weight is not None:
        se = se + span_weight[0][:, ar, ar + 1]
    # continuous charts [B, L+1, L+1, r] and scales
    Pcl = e.new_zeros(B, L + 1, L + 1, rc)
    Pcr = e.new_zeros(B, L + 1, L + 1, rc)
    Pdl = e.new_zeros(B, L + 1, L + 1, rd)
    Pdw = e.new_zeros(B, L + 1, L + 1, rd)
    sc_c = e.new_zeros(B, L + 1, L + 1)
    Pcl[:, ar, ar + 1], Pcr[:, ar, ar + 1] = e @ Lc[m:Sc], e @ Wc[m:Sc]
    Pdl[:, ar, ar + 1], Pdw[:, ar, ar + 1] = e @ Ld[m:Sc], e @ Wd[m:Sc]
    sc_c[:, ar, ar + 1] = se
    # discontinuous charts [B, items, ...]
    Dfill = e.new_zeros(B, max(nI, 1), rc)
    Datt = e.new_zeros(B, max(nI, 1), 4, rd)
    sc_d = e.new_zeros(B, max(nI, 1))
    s_top, sc_top = e.new_zeros(B, rc), e.new_zeros(B)
    T = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    for w in range(2, L + 1):
        lay = layout[w]
        if len(lay["d_items"]):
            sp, at = T(lay["split"]), T(lay["att"])
            i, j, k, l = sp.unbind(1)
            vals = [Pdl[:, i, j] * Pdw[:, k, l]]  # rule 3
            scales = [sc_c[:, i, j] + sc_c[:, k, l]]
            parent = [torch.arange(len(sp), device=dev)]
            if len(at):
                p, q, child, a, b = at.unbind(1)
                vals.append(Datt[:, child, q] * Pdw[:, a, b])  # rules 4-7
                scales.append(sc_d[:, child] + sc_c[:, a, b])
                parent.append(p)
            v, s = _combine(torch.cat(parent), len(sp), vals, scales)  # s_d [B, P_d, rd]
            di = T(lay["d_items"])
            if span_weight is not None:
                s = s + span_weight[1][:, di]
            Dfill[:, di] = v @ d2fill
            Datt[:, di] = torch.einsum("bpr,qrs->bpqs", v, d2att)
            sc_d[:, di] = s
        cc, fl = T(lay["cc"]), T(lay["fill"])
        p, i, j, l = cc.unbind(1)
        vals, scales, parent = [Pcl[:, i, j] * Pcr[:, j, l]], [sc_c[:, i, j] + sc_c[:, j, l]], [p]  # rule 1
        if len(fl):
            p2, child, a, b = fl.unbind(1)
            vals.append(Dfill[:, child] * Pcr[:, a, b])  # rule 2
            scales.append(sc_d[:, child] + sc_c[:, a, b])
            parent.append(p2)
        cs = T(lay["c_spans"])
        v, s = _combine(torch.cat(parent), len(cs), vals, scales)  # s_c [B, P_c, rc]
        i, l = cs.unbind(1)
        if span_weight is not None:
            s = s + span_weight[0][:, i, l]
        Pcl[:, i, l], Pcr[:, i, l] = v @ c2cl, v @ c2cr
        Pdl[:, i, l], Pdw[:, i, l] = v @ c2dl, v @ c2dw
        sc_c[:, i, l] = s
        done = lengths == w
        if bool(done.any()):
            s_top = torch.where(done[:, None], v[:, 0], s_top)
            sc_top = torch.where(done, s[:, 0], sc_top)
    return ((s_top @ Uc.t()) * log_root.exp()).sum(-1).log() + sc_top


def mbr_lcfrs(mc: np.ndarray, md: np.ndarray, n: int, L: int) -> list[tuple]:
    """Derivation over ``n`` words (kept rule set) maximising the summed marginals of its
    continuous (``mc [L+1, L+1]``) and discontinuous (``md [n_items(L)]``) constituents.
    Returns ``longseq.trees`` constituents, root first, single words included."""
    items, _ = chart_layout(L)
    index = {it: q for q, it in enumerate(items)}
    bc, bd = {}, {}
    back_c, back_d = {}, {}
    for i in range(n):
        bc[(i, i + 1)] = 0.0
    for w in range(2, n + 1):
        for i, j, k, l in items:
            if l > n or (j - i) + (l - k) != w:
                continue
            best, arg = bc[(i, j)] + bc[(k, l)], ("split",)
            for s in range(i + 1, j):
                for cand, a in (
                    (bd[(s, j, k, l)] + bc[(i, s)], ("att", (s, j, k, l), (i, s))),
                    (bd[(i, s, k, l)] + bc[(s, j)], ("att", (i, s, k, l), (s, j))),
                ):
                    if cand > best:
                        best, arg = cand, a
            for s in range(k + 1, l):
                for cand, a in (
                    (bd[(i, j, s, l)] + bc[(k, s)], ("att", (i, j, s, l), (k, s))),
                    (bd[(i, j, k, s)] + bc[(s, l)], ("att", (i, j, k, s), (s, l))),
                ):
                    if cand > best:
                        best, arg = cand, a
            bd[(i, j, k, l)] = best + md[index[(i, j, k, l)]]
            back_d[(i, j, k, l)] = arg
        for i in range(n - w + 1):
            l = i + w
            best, arg = -np.inf, None
            for j in range(i + 1, l):
                if bc[(i, j)] + bc[(j, l)] > best:
                    best, arg = bc[(i, j)] + bc[(j, l)], ("cc", j)
            for a in range(i + 1, l):
                for b in range(a + 1, l):
                    cand = bd[(i, a, b, l)] + bc[(a, b)]
                    if cand > best:
                        best, arg = cand, ("fill", a, b)
            bc[(i, l)] = best + mc[i, l]
            back_c[(i, l)] = arg
    out = []

    def walk_c(i, l):
        out.append(((i, l),))
        if l - i == 1:
            return
        arg = back_c[(i, l)]
        if arg[0] == "cc":
            walk_c(i, arg[1]), walk_c(arg[1], l)
        else:
            walk_d((i, arg[1], arg[2], l)), walk_c(arg[1], arg[2])

    def walk_d(it):
        i, j, k, l = it
        out.append(((i, j), (k, l)))
        arg = back_d[it]
        if arg[0] == "split":
            walk_c(i, j), walk_c(k, l)
        else:
            walk_d(arg[1]), walk_c(*arg[2])

    walk_c(0, n)
    return out


class LCFRS2(nn.Module):
    """``LCFRS2(num_nonterminals, num_discontinuous, num_preterminals, vocab_size, *, rank=32,
    emb_dim=256, max_length=20)``: see the module docstring. ``rank`` is used for both the
    continuous-parent and the discontinuous-parent decompositions."""

    def __init__(
        self,
        num_nonterminals: int,
        num_discontinuous: int,
        num_preterminals: int,
        vocab_size: int,
        *,
        rank: int = 32,
        emb_dim: int = 256,
        max_length: int = 20,
    ):
        super().__init__()
        for name, v in (
            ("num_nonterminals", num_nonterminals),
            ("num_discontinuous", num_discontinuous),
            ("num_preterminals", num_preterminals),
            ("vocab_size", vocab_size),
            ("rank", rank),
            ("emb_dim", emb_dim),
            ("max_length", max_length),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"LCFRS2: {name} must be a positive int, got {v!r}")
        self.m, self.d, self.p, self.V, self.rank, self.max_length = (
            num_nonterminals,
            num_discontinuous,
            num_preterminals,
            vocab_size,
            rank,
            max_length,
        )
        self.root_emb = nn.Parameter(torch.randn(1, emb_dim) * 0.1)
        self.c_emb = nn.Parameter(torch.randn(num_nonterminals, emb_dim) * 0.1)
        self.d_emb = nn.Parameter(torch.randn(num_discontinuous, emb_dim) * 0.1)
        self.t_emb = nn.Parameter(torch.randn(num_preterminals, emb_dim) * 0.1)
        self.q_emb = nn.Parameter(torch.randn(4, emb_dim) * 0.1)  # attachment types of rules 4-7
        self.root_mlp = _mlp(emb_dim, num_nonterminals)
        self.term_mlp = _mlp(emb_dim, vocab_size)
        self.proj_c = nn.Parameter(torch.randn(emb_dim, rank) * emb_dim**-0.5)
        self.proj_d = nn.Parameter(torch.randn(emb_dim, rank) * emb_dim**-0.5)
        layer = lambda: nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU())  # noqa: E731
        self.uc, self.lc, self.wc, self.ud, self.ld, self.wd = (layer() for _ in range(6))
        # Kim et al. 2019 (compound-pcfg code): every matrix, embeddings included, Xavier-uniform.
        for prm in self.parameters():
            if prm.dim() > 1:
                nn.init.xavier_uniform_(prm)

    def factors(self):
        """``(log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission)`` (module docstring)."""
        log_root = self.root_mlp(self.root_emb).log_softmax(-1)[0]
        log_emission = self.term_mlp(self.t_emb).log_softmax(-1)
        cont = torch.cat([self.c_emb, self.t_emb])  # [S_c, D]
        att = (self.d_emb[None] + self.q_emb[:, None]).reshape(4 * self.d, -1)
        Uc = (self.uc(self.c_emb) @ self.proj_c).softmax(-1)
        Lc = (self.lc(torch.cat([cont, self.d_emb])) @ self.proj_c).softmax(0)
        Wc = (self.wc(cont) @ self.proj_c).softmax(0)
        Ud = (self.ud(self.d_emb) @ self.proj_d).softmax(-1)
        Ld = (self.ld(torch.cat([cont, att])) @ self.proj_d).softmax(0)
        Wd = (self.wd(cont) @ self.proj_d).softmax(0)
        return log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission

    def rules(self) -> dict[str, torch.Tensor]:
        """Implied dense rule probabilities: ``root [m]``, ``cc [m, S_c, S_c]`` (rule 1),
        ``fill [m, d, S_c]`` (2), ``split [d, S_c, S_c]`` (3), ``att [d, 4, d, S_c]`` (4-7),
        ``emission [p, V]`` (probabilities, not logs)."""
        log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission = self.factors()
        Sc = self.m + self.p
        return {
            "root": log_root.exp(),
            "emission": log_emission.exp(),
            "cc": torch.einsum("ar,br,cr->abc", Uc, Lc[:Sc], Wc),
            "fill": torch.einsum("ar,br,cr->abc", Uc, Lc[Sc:], Wc),
            "split": torch.einsum("ar,br,cr->abc", Ud, Ld[:Sc], Wd),
            "att": torch.einsum("ar,qbr,cr->aqbc", Ud, Ld[Sc:].view(4, self.d, -1), Wd),
        }

    def _inside(self, ids, lengths, span_weight=None):
        log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission = self.factors()
        return inside_lcfrs(log_root, Uc, Lc, Wc, Ud, Ld, Wd, log_emission, ids, lengths, span_weight)

    def log_likelihood(self, ids: torch.Tensor, lengths) -> torch.Tensor:
        """log p(sentence) ``[B]`` (sum over all derivations of the kept rule set)."""
        lengths = check_batch(ids, lengths, self.V, self.max_length)
        return self._inside(ids[:, : int(lengths.max())], lengths)

    def span_marginals(self, ids: torch.Tensor, lengths):
        """``(continuous [B, L+1, L+1], discontinuous [B, n_items])`` posterior marginals; the
        discontinuous items are ``chart_layout(L)[0]`` with L the longest length in the batch."""
        lengths = check_batch(ids, lengths, self.V, self.max_length)
        ids = ids[:, : int(lengths.max())]
        B, L = ids.shape
        with torch.enable_grad():
            wc = torch.zeros(B, L + 1, L + 1, device=ids.device, dtype=self.root_emb.dtype, requires_grad=True)
            wd = torch.zeros(
                B, max(len(chart_layout(L)[0]), 1), device=ids.device, dtype=self.root_emb.dtype, requires_grad=True
            )
            ll = self._inside(ids, lengths, (wc, wd))
            gc, gd = torch.autograd.grad(ll.sum(), (wc, wd))
        return gc, gd

    def parse(self, ids: torch.Tensor, lengths) -> list[list[tuple]]:
        """MBR derivations: per sentence a list of ``longseq.trees`` constituents (one or two blocks)."""
        gc, gd = self.span_marginals(ids, lengths)
        L = gc.shape[-1] - 1
        gc, gd = gc.detach().double().cpu().numpy(), gd.detach().double().cpu().numpy()
        return [mbr_lcfrs(gc[b], gd[b], int(n), L) for b, n in enumerate(torch.as_tensor(lengths).tolist())]
