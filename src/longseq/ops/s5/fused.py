"""S5's stateless SSM with skip as one autograd function (the fast twin of :mod:`.naive`).

Smith, Warrington, Linderman 2023, "Simplified State Space Layers for Sequence Modeling" (S5),
Section 2 / eq. (6)-(7): the discretised MIMO diagonal SSM ``h_t = Λ̄ h_{t-1} + B̄ u_t``,
``y_t = 2 Re(C̃ h_t) + D u_t`` (conjugate-symmetric half of the states, so the readout is twice
the real part), run forwards (and backwards in time with a second ``C̃`` when bidirectional, the
official ``bidirectional`` option). The recurrence is :func:`longseq.ops.scan.chunk.lti_scan`.
"""

from __future__ import annotations

import torch

from ..scan.chunk import lti_scan

__all__ = ["s5_ssm", "ssm_input", "input_matrix", "readout_matrix", "rows_view"]


def s5_ssm(
    u: torch.Tensor, Lbar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, D: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """``y [B, L, H] = Σ_d 2 Re(C̃_d h^d) + D u`` for ``u [B, L, H]``, ``Λ̄ [P/2]`` and ``B̄ [P/2, H]``
    complex, ``C [dirs, H, P/2, 2]`` (real and imaginary parts), ``D [H]``; ``dirs = 2`` adds the
    backward-in-time scan. No state in or out (the stateful path is :func:`longseq.ops.scan.chunk.linear_scan`)."""
    if u.dtype != Lbar.real.dtype:
        raise ValueError(
            f"s5_ssm: u must have the real dtype of Λ̄, {Lbar.real.dtype} (float32 or float64), got {u.dtype}; "
            "the mixer runs half-precision inputs in float32"
        )
    return _S5SSM.apply(u, Lbar, Bbar, C, D, chunk)


def rows_view(t: torch.Tensor) -> torch.Tensor:
    """``[..., P]`` complex -> ``[R, 2P]`` real (interleaved real and imaginary parts, a view)."""
    return torch.view_as_real(t).reshape(-1, 2 * t.shape[-1])


def input_matrix(Bbar: torch.Tensor) -> torch.Tensor:
    """``B̄ [P/2, H]`` complex -> ``M [H, 2 (P/2)]`` real with ``u @ M`` = rows of ``B̄ u``
    (interleaved real and imaginary parts per state)."""
    return torch.view_as_real(Bbar).permute(1, 0, 2).reshape(Bbar.shape[1], -1)


def ssm_input(u: torch.Tensor, Bbar: torch.Tensor) -> torch.Tensor:
    """``B̄ u`` ``[B, L, P/2]`` complex for ``u [B, L, H]``: one real matmul."""
    B, L, H = u.shape
    return torch.view_as_complex((u.reshape(-1, H) @ input_matrix(Bbar)).view(B, L, -1, 2))


def readout_matrix(C: torch.Tensor) -> torch.Tensor:
    """``C [H, P/2, 2]`` -> ``[2 (P/2), H]`` with ``h_rows @ M = 2 Re(C̃ h)``: rows ``(2 C_re, -2 C_im)``
    per state (``Re(c h) = c_r h_r - c_i h_i``; the factor 2 of the conjugate pairs folded in)."""
    return (2 * torch.stack([C[..., 0], -C[..., 1]], -1)).flatten(1).T


class _S5SSM(torch.autograd.Function):
    """Stateless S5 SSM with skip, ``u [B, L, H]`` -> ``y = 2 Re(C̃_1 h^→ + C̃_2 h^←) + D u`` with
    ``h^→_t = Λ̄ h^→_{t-1} + B̄ u_t`` (and ``h^←`` the same backwards in time, bidirectional only).

    Memory: ``y`` is one ``[B, L, H]`` buffer (the readouts are ``addmm`` into it), only ``u``, the
    states ``h^→, h^←`` (``[B, L, P/2]`` complex, a quarter of ``y`` at P = 64, H = 256) and the small
    parameters are saved, and the backward writes ``du = D g + (dBu) B̄`` into one buffer — where
    autograd kept four ``[B, L, H]`` tensors forward and built three more backward. Backward: with
    ``dh = g M^T`` (the readout's adjoint), the adjoint recurrences ``g^→_t = dh^→_t + conj(Λ̄) g^→_{t+1}``
    (and ``g^←`` forwards in time) give ``dBu = g^→ + g^←``, ``dΛ̄ = Σ_t g^→_t conj(h^→_{t-1}) +
    Σ_t g^←_t conj(h^←_{t+1})`` (torch's conjugate-Wirtinger convention, as in
    :mod:`longseq.ops.scan.chunk`), ``dB̄ = Σ dBu ⊗ u``, ``dC̃`` from ``h^T g``, ``dD = Σ g u``.
    """

    @staticmethod
    def forward(ctx, u, Lbar, Bbar, C, D, chunk):
        B, L, H = u.shape
        u2 = u.reshape(-1, H)  # [BL, H]
        Bu = ssm_input(u, Bbar)  # [B, L, P/2]
        hs = [lti_scan(Lbar, Bu, chunk=chunk)]
        if C.shape[0] == 2:
            hs.append(lti_scan(Lbar, Bu, reverse=True, chunk=chunk))
        del Bu
        y = u2 * D  # D u, then + readouts
        for h, Cd in zip(hs, C):
            y.addmm_(rows_view(h), readout_matrix(Cd))  # + 2 Re(C̃ h)
        ctx.save_for_backward(u, Lbar, Bbar, C, D, *hs)
        ctx.chunk = chunk
        return y.view(B, L, H)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        u, Lbar, Bbar, C, D, *hs = ctx.saved_tensors
        B, L, H = u.shape
        P = Lbar.shape[0]
        u2, g2 = u.reshape(-1, H), g.reshape(-1, H)
        dC = torch.empty_like(C)
        dBu, dLbar = None, torch.zeros_like(Lbar)
        for d, (h, Cd) in enumerate(zip(hs, C)):
            dM = rows_view(h).T @ g2  # [2 P/2, H]
            dC[d] = 2 * torch.stack([dM[0::2].T, -dM[1::2].T], -1)
            dh = torch.view_as_complex((g2 @ readout_matrix(Cd).T).view(B, L, P, 2))  # [B, L, P/2]
            gd = lti_scan(Lbar.conj(), dh, reverse=d == 0, chunk=ctx.chunk)  # adjoint states
            del dh
            if d == 0:  # h_{t-1} of the forward scan meets g_t
                dLbar += (gd[:, 1:] * h[:, :-1].conj()).sum((0, 1))
            else:  # h_{t+1} of the backward scan meets g_t
                dLbar += (gd[:, :-1] * h[:, 1:].conj()).sum((0, 1))
            dBu = gd if dBu is None else dBu.add_(gd)
            del gd
        dBu2 = rows_view(dBu)  # [BL, 2 P/2]
        du = (g2 * D).addmm_(dBu2, input_matrix(Bbar).T).view(B, L, H)
        dBbar = torch.view_as_complex((u2.T @ dBu2).view(H, P, 2).permute(1, 0, 2).contiguous())
        dD = sum((g2[r : r + 1024] * u2[r : r + 1024]).sum(0) for r in range(0, g2.shape[0], 1024))
        return du, dLbar, dBbar, dC, dD, None
