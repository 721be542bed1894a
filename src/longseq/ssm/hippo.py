"""HiPPO-LegS and its normal-plus-low-rank (NPLR / DPLR) forms.

References
----------
* Gu, Dao, Ermon, Rudra, Ré (2020), "HiPPO: Recurrent Memory with Optimal Polynomial
  Projections" — the LegS operator (eq. (7) there; Theorem 2).
* Gu, Goel, Ré (2022), "Efficiently Modeling Long Sequences with Structured State Spaces"
  (S4) — eq. (2) (HiPPO matrix), Theorem 1 / Corollary 3.2 (NPLR form
  ``A = V Λ V* - P Q^T = V (Λ - (V*P)(V*Q)*) V*``) and Appendix C.1.

HiPPO-LegS (S4 eq. 2; rows n, columns k, 0-based)::

    A[n, k] = -sqrt(2n+1) sqrt(2k+1)   if n > k
              -(n+1)                   if n = k
              0                        if n < k
    B[n]    =  sqrt(2n+1)

With ``P[n] = sqrt(n + 1/2)`` the matrix ``A + P P^T`` is normal: it equals ``S - I/2`` with
``S`` skew-symmetric (below the diagonal ``-sqrt(2n+1)sqrt(2k+1)/2``, above ``+...``). Note the
sign: it is ``-I/2`` (not ``+I/2``), so every eigenvalue of the normal part has real part
exactly ``-1/2``. ``S = i H`` with ``H = -i S`` Hermitian, so ``torch.linalg.eigh(H)`` gives a
unitary ``V`` and real ``w`` with ``A + P P^T = V diag(-1/2 + i w) V*`` — this diagonal is the
"LegS"/"HiPPO-N" initialisation of S4D (Gu et al. 2022b) and S5 (Smith et al. 2023).

The eigenvalues of a real skew-symmetric matrix come in conjugate pairs ``±i w``; the
conjugate-symmetric ("half") forms keep the ``N/2`` eigenvalues with positive imaginary part
(``N`` even), as the S4 and S5 implementations do. All computations are in float64.
"""

from __future__ import annotations

import torch

__all__ = ["hippo_legs", "nplr_legs", "dplr_legs", "legs_normal_eig"]


def hippo_legs(N: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS state matrix ``A [N, N]`` and input vector ``B [N]`` (S4 eq. 2)."""
    if N < 1:
        raise ValueError(f"N must be a positive int, got {N}")
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)  # [N]
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
    return A.to(dtype), q.clone().to(dtype)


def nplr_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, P, B)`` with ``A + P P^T`` normal (= skew-symmetric - I/2). All real float64."""
    A, B = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)  # [N]
    return A, P, B


def legs_normal_eig(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the normal part ``A + P P^T = V diag(Λ) V*`` of HiPPO-LegS.

    Returns ``Λ [N]`` (complex128, ``Re Λ = -1/2``, sorted by imaginary part, descending) and the
    unitary ``V [N, N]`` (complex128).
    """
    A, P, _ = nplr_legs(N)
    S = A + P[:, None] * P[None, :]  # [N, N] = skew - I/2
    skew = S + 0.5 * torch.eye(N, dtype=torch.float64)
    H = -1j * skew.to(torch.complex128)  # Hermitian
    w, V = torch.linalg.eigh(H)  # ascending real w
    order = torch.argsort(w, descending=True)
    w, V = w[order], V[:, order]
    Lambda = torch.complex(torch.full_like(w, -0.5), w)  # skew = i H -> eigenvalues i w
    return Lambda, V


def dplr_legs(N: int, conj_sym: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in diagonal-plus-low-rank form in the eigenbasis of its normal part.

    ``A = V (diag(Λ) - P̃ P̃*) V*`` with ``P̃ = V* P`` and ``B̃ = V* B`` (S4 Theorem 1 with
    ``Q = P``). Returns ``(Λ, P̃, B̃, V)``; with ``conj_sym`` only the ``N/2`` eigenvalues with
    positive imaginary part and the matching columns of ``V`` (``N`` must be even): the other
    half is their complex conjugate, since ``A``, ``P``, ``B`` are real.
    """
    if conj_sym and N % 2 != 0:
        raise ValueError(f"conj_sym=True needs an even state size N, got {N}")
    _, P, B = nplr_legs(N)
    Lambda, V = legs_normal_eig(N)
    if conj_sym:
        Lambda, V = Lambda[: N // 2], V[:, : N // 2]
    Vh = V.conj().transpose(0, 1)
    return Lambda, Vh @ P.to(torch.complex128), Vh @ B.to(torch.complex128), V
