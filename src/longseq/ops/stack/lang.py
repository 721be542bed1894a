"""Lang's algorithm for the nondeterministic stack (DuSell & Chiang 2020, sec. 3; 2022, sec. 3-4).

A weighted PDA with states ``Q`` and stack alphabet ``Γ`` is driven, at every time step ``j ≥ 1``,
by transition weights that the controller emits from its previous hidden state:

* ``push[q, x, r, y]``: state ``q`` with top ``x`` -> state ``r``, push ``y`` (stack ``…x`` -> ``…xy``);
* ``repl[q, x, r, y]``: replace the top ``x`` by ``y`` (``…x`` -> ``…y``);
* ``pop[q, x, r]``: pop ``x`` (``…wx`` -> ``…w``).

Configurations are flattened to ``n = (q, x)`` with ``n = q·|Γ| + x`` (``N = |Q||Γ|``). The PDA
starts at time 0 in state 0 with the bottom symbol 0 (``⊥``) alone on the stack. Inner weights

    γ[i→j][q,x → r,y] = weight of the runs from time i (state q, top x) to time j (state r, top y)
                        that end one symbol higher than they start and never go lower in between

obey (paper eq. 3-5, the 2022 indexing of the official code ``nondeterministic_stack.py``):

    γ[-1→0][q0,⊥ → q0,⊥] = 1                                     (the bottom, a "push" at time 0)
    γ[j-1→j][q,x → r,y] = push_j[q,x,r,y]                                              (push)
    γ[i→j][q,x → r,y]  = Σ_{s,z} γ[i→j-1][q,x → s,z] repl_j[s,z,r,y]                  (replace, i ≤ j-2)
                       + Σ_{k=i+1}^{j-2} Σ_t γ[i→k][q,x → t,y] γ'[k→j-1][t,y → r]      (pop, i ≤ j-3)
    γ'[k→j-1][t,y → r] = Σ_{s,z} γ[k→j-1][t,y → s,z] pop_j[s,z,r]

and forward weights ``α[-1] = α[0] = 𝟙[(q0, ⊥)]``, ``α[j][r,y] = Σ_{i=-1}^{j-1} Σ_{q,x} α[i][q,x] γ[i→j][q,x → r,y]``
(eq. 6): the total weight of the runs of length ``j`` that end in state ``r`` with ``y`` on top.
The reading (eq. 7) normalises ``α[j]`` over ``(r, y)`` (RNS-RNN, 2022: "PDA-state reading") or
over ``y`` after summing out ``r`` (NS-RNN, 2020). Cost: O(n³ N³) time, O(n² N²) table memory.

The *limited* (incremental) stack of DuSell & Chiang 2022 (sec. 5, ``limited_nondeterministic_stack.py``)
keeps only ``γ[i→j]`` with ``j − D ≤ i`` (segments no longer than ``window = D``) and
``α[j] = Σ_{i=j-D}^{j-1} α[i] γ[i→j]``: O(n D² N³) time and O(D² N²) memory carried from one
chunk to the next. With ``D ≥ n`` it equals the full stack.

Decisions (documented, not in the papers' equations):

* Bottom symbol: the 2022 behaviour for both variants (the symbol above ``⊥`` can be popped;
  ``⊥`` itself cannot). The 2020 code's ``original_bottom_symbol_behavior`` is not reproduced.
* Semiring: the official code runs in the log semiring. Here the tables are real numbers in
  float64 with one rescaling per step: all weights of step ``j`` are divided by one positive
  constant ``c_j`` (per sequence; :func:`scale_actions` picks the largest total weight leaving
  one configuration, detached). Every term of every ``γ[·→j]`` and of ``α[j]`` then carries the
  same factor ``Π_{t ≤ j} 1/c_t``, so the normalised reading is unchanged in exact arithmetic,
  ``Σ α[j] ≤ 1`` (no overflow), and the runs of a step can only shrink. After each step the
  stored ``α`` are divided by their newest total (again a common factor). Underflow needs a
  total weight decaying below 1e-300 within one window (full stack: within the sequence).
"""

from __future__ import annotations

import torch

TINY = 1e-300


def scale_actions(logits_push: torch.Tensor, logits_repl: torch.Tensor, logits_pop: torch.Tensor, normalize: bool):
    """Transition weights from logits ``[B, Q, S, Q, S]`` (push, repl) and ``[B, Q, S, Q]`` (pop).

    ``normalize=True`` (NS-RNN 2020): for each ``(q, x)`` a softmax over all ``2N + |Q|``
    transitions. ``normalize=False`` (RNS-RNN 2022): ``exp(logit)``, divided by the step's largest
    per-configuration total (see the module docstring; the reading does not change).
    Returns ``push, repl [B, N, N]`` and ``pop [B, N, Q]``."""
    B, Q, S = logits_push.shape[:3]
    N = Q * S
    flat = torch.cat([logits_push.reshape(B, N, N), logits_repl.reshape(B, N, N), logits_pop.reshape(B, N, Q)], -1)
    if normalize:
        w = torch.softmax(flat, dim=-1)  # [B, N, 2N + Q]
    else:
        c = torch.logsumexp(flat, dim=-1).amax(-1).detach()  # [B]
        w = torch.exp(flat - c[:, None, None])
    return w[..., :N], w[..., N : 2 * N], w[..., 2 * N :]


class LangStack:
    """The stack tables of one batch, advanced one step at a time (functional: :meth:`update`
    returns a new object, so autograd sees every table once).

    ``cols[c]`` is the γ column of time ``t0 + c``: ``[B, W_c, N, N]`` over the rows
    ``i ∈ [lo(t), t-1]``, ``lo(t) = max(-1, t - D)`` (``D = ∞`` for the full stack; older columns
    that can no longer be used are dropped). ``alpha [B, W, N]`` holds ``α[i]`` for the rows
    ``i ∈ [lo(j), j]`` of the current time ``j``.
    """

    def __init__(self, cols: list, alpha: torch.Tensor, j: int, Q: int, S: int, window: int | None):
        self.cols, self.alpha, self.j, self.Q, self.S, self.window = cols, alpha, j, Q, S, window

    @classmethod
    def initial(cls, batch: int, Q: int, S: int, window: int | None, device=None, dtype=torch.float64) -> "LangStack":
        N = Q * S
        W = 1 if window is None else window  # limited stack: columns padded to D rows (i = t-D..t-1)
        g = torch.zeros(batch, W, N, N, device=device, dtype=dtype)  # γ[-1→0] in the last row
        g[:, -1, 0, 0] = 1.0
        a = torch.zeros(batch, W + 1, N, device=device, dtype=dtype)  # α[-1], α[0] in the last rows
        a[:, -2:, 0] = 1.0
        return cls([g], a, 0, Q, S, window)

    def lo(self, t: int) -> int:
        return -1 if self.window is None else max(-1, t - self.window)

    def update(self, push: torch.Tensor, repl: torch.Tensor, pop: torch.Tensor) -> "LangStack":
        """Time ``j-1 -> j`` with this step's weights ``push, repl [B, N, N]``, ``pop [B, N, Q]``."""
        if self.window is not None:
            return self._update_window(push, repl, pop)
        Q, S = self.Q, self.S
        N = Q * S
        B = push.shape[0]
        j = self.j + 1
        lo = self.lo(j)
        prev = self.cols[-1]  # γ[·→j-1], rows lo(j-1)..j-2   [B, W', N, N]
        prev_lo = self.lo(j - 1)
        parts = []
        if j - 2 >= lo:  # rows lo..j-2 of the replace/pop terms
            rows = prev[:, lo - prev_lo :]  # γ[i→j-1], i = lo..j-2          [B, I+1, N, N]
            term = rows @ repl[:, None]  # replace                          [B, I+1, N, N]
            n_pop = (j - 2) - lo  # rows lo..j-3 have a pop term
            if n_pop > 0:
                # γ'[k→j-1] = γ[k→j-1] · pop for k = lo+1..j-2 (rows 1.. of prev)             [B, K, (t,y), r]
                gp = (rows[:, 1:] @ pop[:, None]).view(B, n_pop, Q, S, Q)
                # Σ_k γ[i→k] γ'[k→j-1], one k at a time: each product reads a stored column (no
                # stacked O(j²) copy is kept for backward, so autograd memory stays O(n² N²))
                popt = term.new_zeros(B, n_pop, N, Q, S)  # [B, I, qx, r, y]
                for c, k in enumerate(range(lo + 1, j - 1)):
                    g = self._col_rows(k, lo).view(B, -1, N, Q, S)  # γ[i→k], i = lo..k-1
                    # Σ_t g[b,i,qx,t,y] γ'[b,t,y,r] by broadcasting: the product saves only views of
                    # stored tensors for backward (an einsum would save permuted O(k) copies: O(n³))
                    prod = (g[..., None] * gp[:, c, None, None]).sum(3)  # [B, m, qx, y, r]
                    popt[:, : g.shape[1]] += prod.transpose(-1, -2)
                term = term + torch.cat([popt.view(B, n_pop, N, N), term.new_zeros(B, 1, N, N)], dim=1)
            parts.append(term)
        parts.append(push[:, None])  # row j-1: push
        col = torch.cat(parts, dim=1)  # γ[i→j], i = lo..j-1              [B, W, N, N]
        a_lo = self.lo(j - 1)  # self.alpha rows: a_lo..j-1
        a = self.alpha[:, lo - a_lo :]  # α[i], i = lo..j-1                [B, W, N]
        new = torch.einsum("bin,binm->bm", a, col)  # α[j]                             [B, N]
        z = new.sum(-1).detach().clamp_min(TINY)  # common rescaling (module docstring)
        alpha = torch.cat([a, new[:, None]], dim=1) / z[:, None, None]
        cols = self.cols + [col]
        if self.window is not None:  # keep the columns t ≥ j+1-D (used by later steps)
            cols = cols[-self.window :]
        return LangStack(cols, alpha, j, Q, S, self.window)

    def _update_window(self, push: torch.Tensor, repl: torch.Tensor, pop: torch.Tensor) -> "LangStack":
        """The limited stack with a constant number of tensor operations per step.

        Every column is stored padded to ``D`` rows ``i = t-D..t-1`` (rows ``i < -1`` are zero), and
        ``α`` to ``D + 1`` rows ``i = j-D..j``. The pop term needs ``G[i, k] = γ[i→k]`` for
        ``i = j-D..j-3``, ``k = j-D+1..j-2``: stacking those ``D-2`` columns as ``C [B, K, D, E]``,
        ``γ[i→k]`` is row ``i - k + D`` of column ``k``, a strided view of ``C`` (offset
        ``i·E + k·(D-1)·E + (D-1)·E`` in index units), masked to ``i < k``."""
        Q, S, D = self.Q, self.S, self.window
        N = Q * S
        B = push.shape[0]
        j = self.j + 1
        prev = self.cols[-1]  # γ[i→j-1], i = j-1-D..j-2        [B, D, N, N]
        rows = prev[:, 1:]  # i = j-D..j-2                    [B, D-1, N, N]
        term = rows @ repl[:, None]  # replace                          [B, D-1, N, N]
        K = D - 2
        if K > 0:
            gp = (rows[:, 1:] @ pop[:, None]).view(B, K, Q, S, Q)  # γ'[k→j-1], k = j-D+1..j-2
            have = self.cols[-1 - K : -1] if K > 0 else []  # columns k = j-D+1..j-2 that exist
            missing = K - len(have)
            C = torch.stack(([prev.new_zeros(prev.shape)] * missing) + list(have), dim=1)  # [B, K, D, N, N]
            E = N * N
            C = C.contiguous()
            G = C.as_strided((B, K, K, E), (C.stride(0), E, (D - 1) * E, 1), C.storage_offset() + (D - 1) * E)
            tri = torch.ones(K, K, dtype=torch.bool, device=C.device).triu(0)  # i_idx <= k_idx
            G = (G * tri[None, :, :, None]).view(B, K, K, N, Q, S)  # [B, i, k, qx, t, y]
            popt = torch.einsum("bikntz,bktzr->binrz", G, gp).reshape(B, K, N, N)  # rows i = j-D..j-3
            term = term + torch.cat([popt, term.new_zeros(B, 1, N, N)], dim=1)
        col = torch.cat([term, push[:, None]], dim=1)  # γ[i→j], i = j-D..j-1            [B, D, N, N]
        a = self.alpha[:, 1:]  # α[i], i = j-D..j-1              [B, D, N]
        new = torch.einsum("bin,binm->bm", a, col)  # α[j]
        z = new.sum(-1).detach().clamp_min(TINY)
        alpha = torch.cat([a, new[:, None]], dim=1) / z[:, None, None]
        return LangStack((self.cols + [col])[-D:], alpha, j, Q, S, D)

    def _col_rows(self, k: int, lo: int) -> torch.Tensor:
        """Rows ``i = lo..k-1`` of the column ``γ[·→k]``: ``[B, k - lo, N, N]`` (a view)."""
        col = self.cols[len(self.cols) - 1 - (self.j - k)]  # time k
        klo = self.lo(k)
        return col[:, lo - klo : k - klo]

    def alpha_j(self) -> torch.Tensor:
        """``α[j]`` (up to the common rescaling): ``[B, N]``."""
        return self.alpha[:, -1]

    def reading(self, states: bool) -> torch.Tensor:
        """Normalised ``α[j]`` over ``(r, y)`` (``states=True``, ``[B, N]``) or over ``y`` (``[B, S]``)."""
        a = self.alpha_j()
        if not states:
            a = a.view(a.shape[0], self.Q, self.S).sum(1)
        return a / a.sum(-1, keepdim=True).clamp_min(TINY)

    def tensors(self) -> list[torch.Tensor]:
        return self.cols + [self.alpha]

    def detach(self) -> "LangStack":
        return LangStack([c.detach() for c in self.cols], self.alpha.detach(), self.j, self.Q, self.S, self.window)

    def num_floats(self) -> int:
        """Floats held per sequence."""
        return sum(c[0].numel() for c in self.cols) + self.alpha[0].numel()
