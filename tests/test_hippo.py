"""HiPPO-LegS matrices and their NPLR/DPLR forms (S4, Gu et al. 2022, eq. 2 and Theorem 1)."""

import math

import pytest
import torch

from longseq.ssm.hippo import dplr_legs, hippo_legs, legs_normal_eig, nplr_legs


def textbook_legs(N):
    A = torch.zeros(N, N, dtype=torch.float64)
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    B = torch.tensor([math.sqrt(2 * n + 1) for n in range(N)], dtype=torch.float64)
    return A, B


@pytest.mark.parametrize("N", [1, 2, 5, 8])
def test_legs_matches_textbook(N):
    A, B = hippo_legs(N)
    A_ref, B_ref = textbook_legs(N)
    torch.testing.assert_close(A, A_ref, rtol=0, atol=0)
    torch.testing.assert_close(B, B_ref, rtol=0, atol=0)


@pytest.mark.parametrize("N", [2, 7, 16, 64])
def test_normal_part_is_skew_minus_half(N):
    A, P, _ = nplr_legs(N)
    S = A + P[:, None] * P[None, :]
    skew = S + 0.5 * torch.eye(N, dtype=torch.float64)
    torch.testing.assert_close(skew, -skew.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("N", [1, 4, 9, 64])
def test_eig_reconstructs_A(N):
    A, P, _ = nplr_legs(N)
    Lam, V = legs_normal_eig(N)
    torch.testing.assert_close(Lam.real, torch.full((N,), -0.5, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(V.conj().T @ V, torch.eye(N, dtype=torch.complex128), rtol=0, atol=1e-10)
    rec = V @ torch.diag(Lam) @ V.conj().T - torch.outer(P, P).to(torch.complex128)
    torch.testing.assert_close(rec, A.to(torch.complex128), rtol=0, atol=1e-9 * N)


@pytest.mark.parametrize("N", [2, 8, 64])
def test_dplr_conj_sym_reconstructs_A(N):
    """The N/2 kept eigenpairs and their conjugates rebuild A = V (Λ - P̃ P̃*) V*."""
    A, B = hippo_legs(N)
    Lam, Pt, Bt, V = dplr_legs(N, conj_sym=True)
    assert Lam.shape == (N // 2,) and (Lam.imag > 0).all()
    Vf = torch.cat([V, V.conj()], 1)
    Lf, Pf, Bf = torch.cat([Lam, Lam.conj()]), torch.cat([Pt, Pt.conj()]), torch.cat([Bt, Bt.conj()])
    rec = Vf @ (torch.diag(Lf) - torch.outer(Pf, Pf.conj())) @ Vf.conj().T
    torch.testing.assert_close(rec, A.to(torch.complex128), rtol=0, atol=1e-9 * N)
    torch.testing.assert_close(Vf @ Bf, B.to(torch.complex128), rtol=0, atol=1e-9 * N)
    Lam_full, Pfull, Bfull, Vfull = dplr_legs(N, conj_sym=False)
    assert Lam_full.shape == (N,)


def test_dplr_odd_rejects_conj_sym():
    with pytest.raises(ValueError, match="even"):
        dplr_legs(5, conj_sym=True)
