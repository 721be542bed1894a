"""Neural hidden Markov models, full rank and low rank, with exact inference.

Papers
------
* Chiu & Rush 2020, "Scaling Hidden Markov Language Models" (EMNLP): the neural
  parameterisation. States have embeddings; every table is a softmax of dot products::

      p(z_1 = j)          = softmax_j( f_s(s) . e'_j )                  (start)
      A_ij = p(z_t = j | z_{t-1} = i) = softmax_j( f_t(e_i) . e'_j )      (transition)
      O_iv = p(x_t = v | z_t = i)     = softmax_v( f_o(p_i) . w_v )       (emission)

  with ``e_i`` / ``e'_j`` the "from" / "to" state embeddings, ``p_i`` a separate emission
  ("preterminal") embedding of state i, ``w_v`` the word embeddings and ``f_*`` small residual
  MLPs (``x + ReLU(W2 ReLU(W1 x))``, two layers, as ``ResLayer`` in the official code
  github.com/justinchiu/low-rank-models, lhmm/models/misc.py; ``f_s`` and ``f_t`` have an extra
  linear layer in front, as there).
* Chiu, Deng & Rush 2021, "Low-Rank Constraints for Fast Inference in Structured Models"
  (NeurIPS), Sec. 3-4 (LHMM): the transition matrix is constrained to rank r through
  non-negative feature maps, rows renormalised::

      A = diag(d)^-1 phi(U) phi(V)^T,   U_i = f_t(e_i),  V_j = e'_j,  d_i = phi(U_i) . sum_j phi(V_j)

  so the forward step ``alpha^T A = ((alpha / d)^T phi(U)) phi(V)^T`` costs O(N r) instead of
  O(N^2) and the N x N matrix is never built. Emissions stay full softmaxes (the paper's "mixed"
  parameterisation: only the bottleneck matrix is factorised). The start distribution uses the
  same feature map: ``p(z_1 = j) ∝ phi(f_s(s)) . phi(V_j)`` (official code, ``start()`` with the
  ``smp`` parameterisation), so the low-rank model never needs an N x N or N-dimensional softmax
  over dot products with a full-rank start either.

Rank and expressivity: every row-stochastic ``A`` has the exact non-negative factorisation
``A = A I`` of rank N, so for ``r >= N`` the low-rank family contains every transition matrix (the
constraint is vacuous) and the O(N r) forward on such factors is the O(N^2) one
(tests/test_structured_hmm.py checks exactly this). The *neural* feature-map parameterisation
reaches such factors (one-hot ``phi(V)``) only in a limit, so ``rank=N`` and ``rank=None`` models
are not the same family of neural tables; both are exact HMMs with exact inference.

Decisions the papers leave open, and where they were taken from
---------------------------------------------------------------
* Feature map (``feature_map``): ``"exp"`` (default) is ``phi(x) = exp(x W)``, the map of the
  official code's efficient path (``score_rff`` / ``compute_rff_parameters``: ``log_phi = emb @
  projection``; the Performer ``- |x|^2 / 2`` term is commented out there). ``"softmax_kernel"``
  is Performer's positive random feature ``phi(x) = exp(x W - |x|^2 / 2) / sqrt(r)`` (Choromanski
  et al. 2021), whose expectation is the softmax kernel ``exp(x . y)`` the full-rank model uses.
  In both, W is ``[emb_dim, r]``, initialised as Performer's orthogonal random features (rows of
  blocks of a random orthogonal matrix, scaled by the norms of Gaussian vectors, as the official
  ``get_2d_array``) and then *learned* (``learn_projection=True``): the official LHMM run command
  (lhmm/scripts/hmm_commands.sh, ``run_lhmm``) uses ``--projection_method static --update_proj 1``.
  ``learn_projection=False`` keeps it fixed (a buffer, still saved with the model). (That command
  also drops the transition MLP, ``--transmlp 0``; we keep ``f_t`` for both ranks, the code's
  other setting, so full and low rank differ only in the transition's form.)
* Numerical range: ``phi(V)`` columns are shifted by their maximum over states and ``phi(U)``
  rows by the same amounts (the product is unchanged), then rows are normalised in log space, so
  ``phi(V) <= 1`` and ``phi(U)_ik / d_i <= 1``: no overflow in float32 whatever the embeddings.
* Forward algorithm (:func:`longseq.ops.hmm.hmm_forward`, a hand-written backward; the reference
  is ``longseq/ops/hmm/naive.py``): the scaled (probability-space) recursion of Rabiner (1989):
  ``pred_t = alpha_{t-1}^T A`` (a distribution), ``u_t = pred_t * exp(log O[:, x_t] - m_t)`` with
  ``m_t = max_i log O[i, x_t]``, ``c_t = sum u_t``, ``alpha_t = u_t / c_t`` and
  ``log p(x) = sum_t (log c_t + m_t)``. Stable for any length in float32 (each step is normalised);
  ``c_t`` is clamped at the smallest normal float so a fully underflowed step gives a very
  small likelihood instead of NaN.
* Padding: ``mask[b, t]`` (True = real token) must be a prefix of ones; steps at padded positions
  leave alpha and the log-likelihood unchanged.
* Initialisation: the official code initialises every matrix, the embeddings included, with
  Xavier-uniform, whose scale shrinks with the number of states (std sqrt(2 / (N + emb_dim))).
  Then every table starts near uniform and, on our short CPU budgets, the model stays at the
  unigram solution (lm_code, N = 512, r = 64, batches of 8 x 32 bytes: 4.58 bpb after 60 steps
  at lr 1e-2, 4.60 after 150 at lr 3e-2; the unigram entropy is 4.51), while embeddings drawn
  from N(0, 0.3^2) reach 3.78 bpb after 100 steps at lr 1e-2 (N(0, 1): 4.46); measured with a
  fixed projection, see benchmarks/STRUCTURED.md. So by default (``init_std=0.3``) the five
  embedding tables are N(0, init_std^2), independent of N; the MLP weights keep Xavier.
  ``init_std=None`` restores the official initialisation.
* Viterbi uses the max-product semiring on the implied full log-transition matrix (a low-rank
  factorisation does not speed up max-product: max does not distribute over the sum in r), so it
  is O(L N^2) and processes the batch one sequence at a time to bound memory to O(N^2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.hmm import hmm_forward

FEATURE_MAPS = ("exp", "softmax_kernel")


class _ResLayer(nn.Module):
    """``x + ReLU(W2 ReLU(W1 x))`` (Chiu & Rush 2020; official ``ResLayer``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.lin2(self.lin1(x).relu()).relu()


def orthogonal_random_features(num_features: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Performer's orthogonal random projection ``[dim, num_features]``: blocks of ``dim`` orthonormal
    rows (QR of Gaussian matrices), each row scaled by the norm of an independent Gaussian vector,
    so every row is marginally Gaussian N(0, I) and rows within a block are orthogonal."""
    blocks, left = [], num_features
    while left > 0:
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        blocks.append(q.T[: min(left, dim)])
        left -= dim
    rows = torch.cat(blocks, 0)  # [r, dim]
    scale = torch.randn(num_features, dim, generator=generator).norm(dim=-1, keepdim=True)
    return (rows * scale).T.contiguous()  # [dim, r]


def check_inputs(
    ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``ids: [B, L]`` (and the prefix ``mask: [B, L]``); returns ids with padded positions
    set to 0 (so they can index the emission table) and the boolean mask."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(f"ids must be a [batch, length] tensor, got {getattr(ids, 'shape', type(ids))}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
    B, L = ids.shape
    if B == 0 or L == 0:
        raise ValueError(f"empty input: ids has shape {tuple(ids.shape)}; need at least one sequence of length >= 1")
    if mask is not None:
        if mask.shape != ids.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match ids shape {tuple(ids.shape)}")
        mask = mask.bool()
        lengths = mask.sum(-1)
        if bool((lengths == 0).any()):
            bad = int((lengths == 0).nonzero()[0])
            raise ValueError(f"empty sequence: mask row {bad} has no tokens; every sequence needs length >= 1")
        prefix = torch.arange(L, device=ids.device)[None] < lengths[:, None]
        if not bool((prefix == mask).all()):
            raise ValueError(
                "mask must be a prefix mask (True for the tokens, then False for the padding) in every row"
            )
        ids = ids.masked_fill(~mask, 0)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"token ids out of range: found ids in [{lo}, {hi}], allowed 0 <= id < vocab_size={vocab_size}"
        )
    return ids, mask


def viterbi_decode(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_em: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product (Viterbi) decoding. ``log_trans: [N, N]``, ``log_em: [B, L, N]``.

    Returns ``(states [B, L]`` with -1 at padded positions, ``best log joint p(x, z*) [B])``."""
    B, L, _N = log_em.shape
    lengths = [L] * B if mask is None else mask.sum(-1).tolist()
    paths = torch.full((B, L), -1, dtype=torch.long, device=log_em.device)
    scores = log_em.new_empty(B)
    for b in range(B):
        n = int(lengths[b])
        delta = log_init + log_em[b, 0]  # [N]
        back = []
        for t in range(1, n):
            cand = delta[:, None] + log_trans  # [N(from), N(to)]
            best, arg = cand.max(0)  # [N]
            back.append(arg)
            delta = best + log_em[b, t]
        score, z = delta.max(0)
        scores[b] = score
        paths[b, n - 1] = z
        for t in range(n - 2, -1, -1):
            z = back[t][z]
            paths[b, t] = z
    return paths, scores


class HMM(nn.Module):
    """Neural HMM over ``vocab_size`` tokens with ``num_states`` hidden states.

    ``rank=None``: full transition matrix (Chiu & Rush 2020), forward O(L N^2).
    ``rank=r``: the low-rank transition of Chiu, Deng & Rush 2021, forward O(L N r), the N x N
    matrix never built (see the module docstring for the equations and every choice made).
    ``feature_map``: ``"exp"`` (official code) or ``"softmax_kernel"`` (Performer); low rank only.
    ``emb_dim``: width of the state / word embeddings.
    ``init_std``: the embeddings start as N(0, init_std^2); ``None``: Xavier-uniform, as the official
    code (see the module docstring, "Initialisation").
    ``learn_projection``: train the feature projection W (official run setting) or keep it fixed.
    """

    def __init__(
        self,
        num_states: int,
        vocab_size: int,
        *,
        rank: int | None = None,
        feature_map: str = "exp",
        emb_dim: int = 128,
        init_std: float | None = 0.3,
        learn_projection: bool = True,
    ):
        super().__init__()
        for name, v in (("num_states", num_states), ("vocab_size", vocab_size), ("emb_dim", emb_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
            raise ValueError(f"rank must be None (full rank) or a positive integer, got {rank!r}")
        if init_std is not None and not (isinstance(init_std, (int, float)) and init_std > 0):
            raise ValueError(
                f"init_std must be None (Xavier, as the official code) or a positive number, got {init_std!r}"
            )
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature_map {feature_map!r}; choose one of {', '.join(FEATURE_MAPS)}")
        self.num_states, self.vocab_size, self.rank, self.feature_map = num_states, vocab_size, rank, feature_map
        self.emb_dim = emb_dim
        h = emb_dim
        self.start_emb = nn.Parameter(torch.empty(1, h))
        self.start_mlp = nn.Sequential(nn.Linear(h, h), _ResLayer(h), _ResLayer(h))
        self.state_emb = nn.Parameter(torch.empty(num_states, h))  # e_i ("from")
        self.trans_mlp = nn.Sequential(nn.Linear(h, h), _ResLayer(h), _ResLayer(h))
        self.next_state_emb = nn.Parameter(torch.empty(num_states, h))  # e'_j ("to")
        self.preterminal_emb = nn.Parameter(torch.empty(num_states, h))  # p_i
        self.terminal_mlp = nn.Sequential(_ResLayer(h), _ResLayer(h))
        self.word_emb = nn.Parameter(torch.empty(vocab_size, h))  # w_v
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if init_std is not None:  # see the module docstring, "Initialisation"
            for p in (self.start_emb, self.state_emb, self.next_state_emb, self.preterminal_emb, self.word_emb):
                nn.init.normal_(p, 0.0, init_std)
        self.learn_projection = bool(learn_projection)
        if rank is not None:
            W = orthogonal_random_features(rank, h)  # [h, r]
            if self.learn_projection:
                self.projection = nn.Parameter(W)
            else:
                self.register_buffer("projection", W)

    # ------------------------------------------------------------------ parameters
    def log_emission(self) -> torch.Tensor:
        """``[N, V]`` log p(x = v | z = i)."""
        return (self.terminal_mlp(self.preterminal_emb) @ self.word_emb.T).log_softmax(-1)

    def _log_features(self, x: torch.Tensor) -> torch.Tensor:
        """``log phi(x)`` for ``x: [M, h]`` -> ``[M, r]``."""
        z = x @ self.projection
        if self.feature_map == "softmax_kernel":
            z = z - 0.5 * x.square().sum(-1, keepdim=True) - 0.5 * math.log(self.rank)
        return z

    def low_rank_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_initial [N], U [N, r], V [N, r])`` with ``A = U V^T`` row-stochastic, ``U, V >= 0``
        (``U`` already divided by the row normalisers d)."""
        if self.rank is None:
            raise ValueError("low_rank_factors() needs a low-rank HMM (rank=r); this one is full rank")
        lu = self._log_features(self.trans_mlp(self.state_emb))  # [N, r] log phi(U)
        lv = self._log_features(self.next_state_emb)  # [N, r] log phi(V)
        ls = self._log_features(self.start_mlp(self.start_emb))  # [1, r] log phi(s)
        shift = lv.max(0, keepdim=True).values.detach()  # [1, r]
        lv = lv - shift
        lu, ls = lu + shift, ls + shift
        log_colsum = lv.logsumexp(0, keepdim=True)  # [1, r] log sum_j phi(V_j)
        lu = lu - (lu + log_colsum).logsumexp(-1, keepdim=True)  # [N, r] rows / d_i
        log_init = (ls.T + lv.T).logsumexp(0)  # [N] log phi(s).phi(V_j)
        return log_init.log_softmax(-1), lu.exp(), lv.exp()

    def _transition(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(log_initial [N], mats)`` with ``A = prod(mats)``: ``[A]`` (full) or ``[U, V^T]`` (rank r)."""
        if self.rank is None:
            s = self.start_mlp(self.start_emb)  # [1, h]
            log_init = (s @ self.next_state_emb.T).log_softmax(-1)[0]  # [N]
            A = (self.trans_mlp(self.state_emb) @ self.next_state_emb.T).softmax(-1)  # [N, N]
            return log_init, [A]
        log_init, U, V = self.low_rank_factors()
        return log_init, [U, V.T]  # [N, r], [r, N]

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_initial [N], log_transition [N, N], log_emission [N, V])``, materialised (for rank r,
        the implied full matrix ``log(U V^T)``; O(N^2) memory: for inspection and Viterbi)."""
        if self.rank is None:
            s = self.start_mlp(self.start_emb)
            log_init = (s @ self.next_state_emb.T).log_softmax(-1)[0]
            log_trans = (self.trans_mlp(self.state_emb) @ self.next_state_emb.T).log_softmax(-1)
        else:
            log_init, U, V = self.low_rank_factors()
            log_trans = (U @ V.T).log()
        return log_init, log_trans, self.log_emission()

    # ------------------------------------------------------------------ inference
    def _observed_emissions(self, ids: torch.Tensor) -> torch.Tensor:
        return self.log_emission().T[ids]  # [B, L, N]

    def log_likelihood(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log p(x)`` per sequence ``[B]`` for ``ids: [B, L]`` (``mask: [B, L]``, True = token)."""
        ids, mask = check_inputs(ids, mask, self.vocab_size)
        log_init, mats = self._transition()
        return hmm_forward(log_init, self._observed_emissions(ids), mats, mask)[0]

    @torch.no_grad()
    def viterbi(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Most probable state sequence: ``(states [B, L]`` (-1 at padding), ``log p(x, z*) [B])``."""
        ids, mask = check_inputs(ids, mask, self.vocab_size)
        log_init, log_trans, log_em = self.params()
        return viterbi_decode(log_init, log_trans, log_em.T[ids], mask)

    @torch.no_grad()
    def generate(self, n: int, length: int, generator: torch.Generator | None = None, return_states: bool = False):
        """Sample ``n`` sequences of ``length`` tokens: ``[n, length]`` (and the states with
        ``return_states``). Low rank: each transition row is ``U_z V^T`` (O(N r) per step)."""
        if n < 1 or length < 1:
            raise ValueError(f"generate needs n >= 1 and length >= 1, got n={n}, length={length}")
        log_em = self.log_emission()
        if self.rank is None:
            log_init, log_trans, _ = self.params()
            row = lambda z: log_trans[z].exp()
        else:
            log_init, U, V = self.low_rank_factors()
            row = lambda z: U[z] @ V.T
        z = torch.multinomial(log_init.exp().expand(n, -1), 1, generator=generator)[:, 0]
        states, tokens = [], []
        for t in range(length):
            if t > 0:
                z = torch.multinomial(row(z), 1, generator=generator)[:, 0]
            states.append(z)
            tokens.append(torch.multinomial(log_em[z].exp(), 1, generator=generator)[:, 0])
        x, zs = torch.stack(tokens, 1), torch.stack(states, 1)
        return (x, zs) if return_states else x

    def next_token_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """The HMM's predictive distribution after each prefix: ``[B, L, V]`` with entry ``[b, t, v] =
        log p(x_{t+1} = v | x_1..x_t)``, i.e. ``log((alpha_t^T A) O)`` with alpha_t the normalised
        forward vector (filtering distribution) after token t."""
        ids, _ = check_inputs(ids, None, self.vocab_size)
        log_init, mats = self._transition()
        log_o = self.log_emission()  # [N, V]
        _, P = hmm_forward(log_init, log_o.T[ids], mats, want_pred=True)  # [B, L, N] p(z_{t+1} | x_<=t)
        return (P @ log_o.exp()).clamp_min(torch.finfo(P.dtype).tiny).log()  # [B, L, V]
