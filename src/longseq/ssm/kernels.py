"""Kernels of diagonal state-space models and the diagonal recurrence.

A diagonal SSM in discrete time (state ``x [N]`` complex, input ``u`` real)::

    x_l = z * x_{l-1} + u_l,        y_l = Re sum_n w_n x_{l, n}                       (1)

has the convolution kernel (Vandermonde product; S4D Section 3.2, eq. (6))::

    K_l = Re sum_n w_n z_n^l,        l = 0 .. L-1                                      (2)

Every diagonal SSM here is brought to this form: with ``dA = z`` and ``dB``, ``C`` from the
paper, ``w = 2 C dB`` for S4D (conjugate pairs give ``2 Re``; the state in (1) is the paper's
state divided by ``dB``), ``w = W (e^{ΛΔ}-1)/Λ`` for DSS-exp and ``w = C (e^Λ - 1)/Λ`` with modes
shared by all channels for GSS (:class:`SharedDSSKernel`).

The kernels are Vandermonde products, computed by :func:`longseq.ops.vandermonde.chunk.vandermonde`
(chunked real matmuls, a backward that keeps only ``w`` and ``log z``); the step of (1) is
:func:`longseq.ops.diag_ssm.recurrent.diag_step`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.vandermonde.chunk import vandermonde
from ..optim import set_optim
from .discretize import DISCRETIZATIONS, discretize
from .init import diagonal_init, log_dt_init

__all__ = [
    "DiagSSMKernel",
    "DSSKernel",
    "SharedDSSKernel",
]


def _real_dtype(p: torch.Tensor) -> torch.dtype:
    """Kernels are computed in float32 at least (no complex half types)."""
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


def _complex_param(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor stored as a real ``[..., 2]`` parameter (so that ``.to(dtype)`` works)."""
    return nn.Parameter(torch.view_as_real(z.to(torch.complex128)).to(torch.get_default_dtype()))


def _as_complex(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.view_as_complex(p.to(dtype).contiguous())


def _param_key(module: nn.Module, *extra) -> tuple:
    """What a function of ``module``'s own parameters depends on: storage, in-place version, dtype,
    device of each (``load_state_dict``, optimiser steps and ``.to()`` all change the key)."""
    return (*extra, *((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters(recurse=False)))


def _no_grad_cached(module: nn.Module, fn, *extra):
    """``fn()``, reused while the parameters are unchanged -- only when autograd is off (decoding).

    The recurrent step recomputes the discretisation from the parameters on every token (an
    ``exp``/``log`` over ``[H, N/2]`` complex modes per layer); without gradients the result is a
    pure function of the parameters, so it is cached on the module and recomputed when any
    parameter's storage or version changes. With gradients on, ``fn()`` runs every time (the
    graph must reach the parameters).
    """
    if torch.is_grad_enabled():
        return fn()
    key = _param_key(module, *extra)
    hit = module.__dict__.get("_modes_cache")
    if hit is not None and hit[0] == key:
        return hit[1]
    val = fn()
    module.__dict__["_modes_cache"] = (key, val)
    return val


class DiagSSMKernel(nn.Module):
    """S4D: ``H`` diagonal SSMs of state size ``N`` (``N/2`` conjugate-pair modes), ``C`` channels.

    Parameters (S4D Section 4, the "exp" real-part transform of the S4 repository)::

        A = -exp(log_A_real) + i A_imag     [H, N/2]   (Re A < 0 throughout training)
        B                                   [H, N/2]   complex, trained
        C                                   [C, H, N/2] complex, ~ N(0, 1)
        dt = exp(log_dt)                    [H]

    ``A``, ``B`` and ``dt`` get their own learning rate ``lr`` and no weight decay (S4 recipe);
    ``lr=None`` keeps the global learning rate (still without weight decay).
    """

    def __init__(
        self,
        H: int,
        N: int = 64,
        *,
        channels: int = 1,
        init: str = "lin",
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr: float | None = 1e-3,
    ):
        super().__init__()
        if disc not in DISCRETIZATIONS:
            raise ValueError(f"disc must be one of {', '.join(DISCRETIZATIONS)}; got {disc!r}")
        A, B = diagonal_init(N, init)  # [N/2] each
        self.disc = disc
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).to(torch.get_default_dtype()))
        self.log_A_real = nn.Parameter(torch.log(-A.real).expand(H, -1).to(torch.get_default_dtype()).clone())
        self.A_imag = nn.Parameter(A.imag.expand(H, -1).to(torch.get_default_dtype()).clone())
        self.B = _complex_param(B.expand(H, -1))
        self.C = _complex_param(torch.randn(channels, H, N // 2, dtype=torch.complex128))
        tag = {"weight_decay": 0.0} if lr is None else {"lr": lr, "weight_decay": 0.0}
        for p in (self.log_dt, self.log_A_real, self.A_imag, self.B):
            set_optim(p, **tag)

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A [H, N/2], B [H, N/2], C [C, H, N/2], dt [H])`` in (at least) float32 / complex64."""
        dtype = _real_dtype(self.log_dt)
        A = torch.complex(-torch.exp(self.log_A_real.to(dtype)), self.A_imag.to(dtype))
        return A, _as_complex(self.B, dtype), _as_complex(self.C, dtype), torch.exp(self.log_dt.to(dtype))

    def modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w [C, H, N/2], log_z [H, N/2])`` of eq. (1)-(2): ``w = 2 C dB``, ``log z = log dA``.

        Cached while autograd is off and the parameters are unchanged (see :func:`_no_grad_cached`)."""
        return _no_grad_cached(self, self._modes, self.disc)

    def _modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        A, B, C, dt = self.continuous()
        log_z, dB = discretize(A, B, dt, self.disc)
        return 2 * C * dB, log_z

    def kernel(self, L: int) -> torch.Tensor:
        """``K [C, H, L]`` (eq. 2)."""
        w, log_z = self.modes()
        return vandermonde(w, log_z, L)


class DSSKernel(nn.Module):
    """DSS (Gupta, Gu, Berant 2022, Proposition 1): ``H`` channels of ``N`` complex modes.

    ``variant="exp"`` (DSS_exp, Prop. 1(a), Re Λ < 0 via ``Λ = -exp(log_re) + i im``)::

        K_l = Re sum_n W_n (e^{Λ_n Δ} - 1) / Λ_n  e^{Λ_n Δ l}

    which is ZOH with ``B = 1`` (so it has the recurrence (1) with ``z = e^{ΛΔ}``).

    ``variant="softmax"`` (DSS_softmax, Prop. 1(b), Λ unconstrained)::

        K_l = Re sum_n (W_n / Λ_n) softmax_l(Λ_n Δ l)   (softmax over l = 0 .. l_max - 1)

    The paper normalises over the input length L; a kernel whose value at lag l depends on the
    length of the sequence breaks causality under padding and has no recurrent form, so here the
    softmax runs over a fixed ``l_max`` (the task's maximum length, to which the paper pads every
    input anyway) and inputs longer than ``l_max`` are rejected. Modes with ``Re(ΛΔ) > 0`` are
    evaluated in the flipped form ``e^{ΛΔl}/S(e^{ΛΔ}) = e^{-ΛΔ(l_max-1-l)}/S(e^{-ΛΔ})`` (as the
    DSS code does) so no power exceeds 1 in modulus; this variant has no ``step``.

    Initialisation: Λ = skew-HiPPO (``legs`` of size ``2N``), ``W ~ CN(0, 1)``, ``log Δ ~
    U[log dt_min, log dt_max]`` per channel. Λ and Δ get learning rate ``lr``, no weight decay.
    """

    def __init__(
        self,
        H: int,
        N: int = 64,
        *,
        channels: int = 1,
        variant: str = "exp",
        l_max: int | None = None,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr: float | None = 1e-3,
    ):
        super().__init__()
        if variant not in ("exp", "softmax"):
            raise ValueError(f"variant must be 'exp' or 'softmax'; got {variant!r}")
        if variant == "softmax" and not (isinstance(l_max, int) and l_max > 0):
            raise ValueError(
                "variant='softmax' needs l_max (a positive int): the length its softmax "
                f"normalises over; got l_max={l_max!r}"
            )
        if not isinstance(N, int) or N < 1:
            raise ValueError(f"d_state must be a positive int, got {N!r}")
        Lam, _ = diagonal_init(2 * N, init)  # [N]
        self.variant, self.l_max = variant, l_max
        f = torch.get_default_dtype()
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).to(f))
        re = torch.log(-Lam.real) if variant == "exp" else Lam.real
        self.Lambda_re = nn.Parameter(re.expand(H, -1).to(f).clone())  # log(-Re Λ) for exp
        self.Lambda_im = nn.Parameter(Lam.imag.expand(H, -1).to(f).clone())
        self.W = _complex_param(torch.randn(channels, H, N, dtype=torch.complex128))
        tag = {"weight_decay": 0.0} if lr is None else {"lr": lr, "weight_decay": 0.0}
        for p in (self.log_dt, self.Lambda_re, self.Lambda_im):
            set_optim(p, **tag)

    @property
    def recurrent(self) -> bool:
        return self.variant == "exp"

    def _lambda(self, dtype):
        re = self.Lambda_re.to(dtype)
        re = -torch.exp(re) if self.variant == "exp" else re
        return torch.complex(re, self.Lambda_im.to(dtype))  # [H, N]

    def modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w [C, H, N], log_z [H, N])`` of eq. (1)-(2) (``variant="exp"`` only)."""
        if self.variant != "exp":
            raise ValueError("DSS variant='softmax' has no recurrent form; use variant='exp'")
        dtype = _real_dtype(self.log_dt)
        lam = self._lambda(dtype)
        log_z = torch.exp(self.log_dt.to(dtype)).unsqueeze(-1) * lam  # ΛΔ
        return _as_complex(self.W, dtype) * torch.expm1(log_z) / lam, log_z

    def kernel(self, L: int) -> torch.Tensor:
        """``K [C, H, L]``."""
        return self.kernel_slice(slice(None), L, *self.kernel_params())

    def kernel_params(self) -> tuple[torch.Tensor, ...]:
        """The small tensors the kernel is a Vandermonde product of, channels in dim -2: ``(w [C, H, N],
        log_z [H, N])`` for ``exp``; for ``softmax`` ``(w_decay [C, H, N], w_grow [C, H, N], log_z)``,
        the modes with ``|z| <= 1`` read forwards and the flipped (growing) ones."""
        if self.variant == "exp":
            return self.modes()
        dtype = _real_dtype(self.log_dt)
        lam = self._lambda(dtype)
        lamdt = torch.exp(self.log_dt.to(dtype)).unsqueeze(-1) * lam  # [H, N]
        grow = lamdt.real > 0
        log_z = torch.where(grow, -lamdt, lamdt)  # |z| <= 1
        S = torch.expm1(log_z * self.l_max) / torch.expm1(log_z)  # sum_{l < l_max} z^l
        w = _as_complex(self.W, dtype) / (lam * S)  # [C, H, N]
        zero = torch.zeros((), dtype=w.dtype, device=w.device)
        return torch.where(grow, zero, w), torch.where(grow, w, zero), log_z

    def kernel_slice(self, c: slice, L: int, *params: torch.Tensor) -> torch.Tensor:
        """``K [C, g, L]`` of the channels ``c`` from :meth:`kernel_params` (differentiable in them)."""
        if self.variant == "exp":
            w, log_z = params
            return vandermonde(w[:, c], log_z[c], L)
        if L > self.l_max:
            raise ValueError(f"dss variant='softmax': sequence length {L} exceeds l_max={self.l_max}")
        w_decay, w_grow, log_z = (p[..., c, :] for p in params)
        K = vandermonde(w_decay, log_z, self.l_max) + vandermonde(w_grow, log_z, self.l_max).flip(-1)
        return K[..., :L]


class SharedDSSKernel(nn.Module):
    """GSS's simplified DSS (Mehta et al. 2023, Figure 1): ``N`` modes ``Λ`` shared by ``H``
    channels, ``Δ = 1``, ``C [C, H, N]`` complex; ZOH with ``B = 1``, so ``w = C (e^Λ - 1)/Λ``.

    ``Λ = -exp(Λ_re) + i exp(Λ_im)`` with ``Λ_re, Λ_im ~ N(0, 1)`` (random, not HiPPO), ``Re C, Im C ~ N(0, 1)``. ``Λ`` gets learning rate ``lr``, no weight decay.
    """

    def __init__(self, H: int, N: int = 512, *, channels: int = 1, lr: float | None = 1e-3):
        super().__init__()
        f = torch.get_default_dtype()
        self.Lambda_re = nn.Parameter(torch.randn(N, dtype=f))  # Re Λ = -exp(Λ_re)
        self.Lambda_im = nn.Parameter(torch.randn(N, dtype=f))  # Im Λ = exp(Λ_im)
        self.C = nn.Parameter(torch.randn(channels, H, N, 2, dtype=f))  # real, imaginary
        tag = {"weight_decay": 0.0} if lr is None else {"lr": lr, "weight_decay": 0.0}
        for p in (self.Lambda_re, self.Lambda_im):
            set_optim(p, **tag)

    def modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w [C, H, N], log_z = Λ [N])``: ``x_l = e^Λ x_{l-1} + u_l``, ``y_l = Re Σ_n w_n x_{l,n}``."""
        dtype = _real_dtype(self.C)
        lam = torch.complex(-torch.exp(self.Lambda_re.to(dtype)), torch.exp(self.Lambda_im.to(dtype)))
        return _as_complex(self.C, dtype) * (torch.expm1(lam) / lam), lam

    def kernel(self, L: int) -> torch.Tensor:
        """``K [C, H, L]``."""
        w, log_z = self.modes()
        return vandermonde(w, log_z, L)
