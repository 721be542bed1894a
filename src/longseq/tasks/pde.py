"""Numerical PDE solvers and Gaussian random fields behind the neural-operator tasks (``burgers``,
``darcy``): the data recipes of Li, Kovachki et al., "Fourier Neural Operator for Parametric
Partial Differential Equations" (ICLR 2021), sec. 5.1-5.2, generated here offline and seeded.
Pure numpy (float64); the tasks that use them live in :mod:`longseq.tasks.operator_tasks`.

Gaussian random fields
----------------------
* :func:`grf_periodic_1d` samples N(0, sigma^2 (-Delta + tau^2 I)^(-gamma)) on the periodic unit
  interval. The paper's Burgers measure is N(0, 625 (-Delta + 25 I)^(-2)): sigma = 25, tau = 5,
  gamma = 2 (FNO paper sec. 5.1). Karhunen-Loeve expansion in the eigenfunctions of -Delta
  (1, sqrt2 cos 2 pi k x, sqrt2 sin 2 pi k x; eigenvalues 4 pi^2 k^2): coefficient variance
  lambda_k = sigma^2 (4 pi^2 k^2 + tau^2)^(-gamma), the constant mode included (lambda_0 =
  sigma^2 tau^(-2 gamma) = 1 for the paper's field), truncated below the grid's Nyquist frequency.
* :func:`grf_neumann_2d` samples N(0, (-Delta + tau^2 I)^(-alpha)) on the unit square with zero
  Neumann conditions (the paper's Darcy measure: tau = 3, alpha = 2, sec. 5.2): eigenfunctions
  c_k1 c_k2 cos(pi k1 x) cos(pi k2 y) (c_0 = 1, c_k = sqrt2), variance (pi^2 |k|^2 + tau^2)^(-alpha).
  Decision: the constant mode is kept, as the measure states it; the official MATLAB generator
  (GRF.m, from memory, not checked) zeroes it. Its sign is what matters after thresholding.

Burgers (FNO sec. 5.1)
----------------------
u_t + (u^2/2)_x = nu u_xx on the periodic unit interval, nu = 0.1, map u(., 0) -> u(., 1).
:func:`burgers_etdrk4`: Fourier pseudo-spectral in space (N = 8,192 points in the paper's data;
products evaluated on the grid, 2/3-rule dealiasing of the nonlinear term) and ETDRK4 in time
(Cox & Matthews 2002 with the contour-integral coefficients of Kassam & Trefethen 2005, 32
points): the stiff diffusion e^{-nu (2 pi k)^2 t} is integrated exactly, the advection explicitly.
The paper says "split step: the heat equation part exactly in Fourier space, the non-linear part
with a very fine forward Euler"; the official data script used chebfun's ``spin`` (ETDRK4), so we
use ETDRK4; ``dt`` (default 1e-3) is checked by refinement in the tests.

Darcy (FNO sec. 5.2)
--------------------
-div(a grad u) = f on (0,1)^2, u = 0 on the boundary, f = 1, a = psi(z) with psi = 12 on z >= 0
and 3 on z < 0. :func:`darcy_solve`: the standard 5-point finite-volume/finite-difference scheme
on an s x s node grid (h = 1/(s-1), nodes on the boundary), face coefficients the arithmetic mean
of the two node values (as in the official solve_gwf.m, from memory), solved for all samples at
once by preconditioned conjugate gradients; the preconditioner is the exact inverse of the
constant-coefficient Dirichlet Laplacian (a fast sine transform via the FFT), so the condition
number is at most max a / min a = 4 whatever the grid and CG needs ~30 iterations at 1e-10.
"""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- random fields
def grf_periodic_1d_variance(n: int, sigma: float = 25.0, tau: float = 5.0, gamma: float = 2.0) -> np.ndarray:
    """Variance lambda_k of the KL coefficients for k = 0 .. n//2 - 1 (the modes sampled on n points)."""
    k = np.arange(n // 2)
    return sigma**2 * (4 * np.pi**2 * k**2 + tau**2) ** (-gamma)


def grf_periodic_1d(
    num: int, n: int, rng: np.random.Generator, sigma: float = 25.0, tau: float = 5.0, gamma: float = 2.0
) -> np.ndarray:
    """``num`` samples of N(0, sigma^2 (-Delta + tau^2)^(-gamma)) on x_j = j / n, j < n: ``[num, n]``.

    u(x) = sqrt(lam_0) xi_0 + sum_{k>=1} sqrt(2 lam_k) (xi_k cos 2 pi k x + eta_k sin 2 pi k x),
    evaluated exactly at the grid points by an inverse real FFT (Nyquist mode left out)."""
    if n < 2 or n % 2:
        raise ValueError(f"grf_periodic_1d: n must be an even number >= 2, got {n}")
    lam = grf_periodic_1d_variance(n, sigma, tau, gamma)  # [n/2]
    xi = rng.standard_normal((num, n // 2))
    eta = rng.standard_normal((num, n // 2))
    coef = np.zeros((num, n // 2 + 1), dtype=np.complex128)  # rfft convention: sum_j u_j e^{-2 pi i k j/n}
    coef[:, 0] = n * np.sqrt(lam[0]) * xi[:, 0]
    # sqrt2 (xi cos + eta sin) = sqrt2 Re((xi - i eta) e^{i theta}); irfft gives (2/n) Re(c e^{i theta})
    coef[:, 1 : n // 2] = n * np.sqrt(lam[1:] / 2) * (xi[:, 1:] - 1j * eta[:, 1:])
    return np.fft.irfft(coef, n=n, axis=-1)


def grf_neumann_2d_variance(k_max: int, tau: float = 3.0, alpha: float = 2.0) -> np.ndarray:
    """Variance of the KL coefficient of cos(pi k1 x) cos(pi k2 y) (normalised), ``[k_max, k_max]``."""
    k = np.arange(k_max)
    return (np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha)


def neumann_basis(s: int, k_max: int) -> np.ndarray:
    """Orthonormal cosine eigenfunctions c_k cos(pi k x) at the nodes x_i = i / (s - 1): ``[s, k_max]``."""
    x = np.linspace(0.0, 1.0, s)
    k = np.arange(k_max)
    c = np.where(k == 0, 1.0, np.sqrt(2.0))
    return c[None, :] * np.cos(np.pi * x[:, None] * k[None, :])


def grf_neumann_2d(
    num: int, s: int, rng: np.random.Generator, tau: float = 3.0, alpha: float = 2.0, k_max: int | None = None
) -> np.ndarray:
    """``num`` samples of N(0, (-Delta + tau^2)^(-alpha)) with zero Neumann conditions on the s x s
    node grid of [0,1]^2, KL expansion truncated at ``k_max`` modes per axis (default s): ``[num, s, s]``."""
    if s < 2:
        raise ValueError(f"grf_neumann_2d: s must be >= 2, got {s}")
    k_max = s if k_max is None else k_max
    sd = np.sqrt(grf_neumann_2d_variance(k_max, tau, alpha))  # [K, K]
    phi = neumann_basis(s, k_max)  # [s, K]
    xi = rng.standard_normal((num, k_max, k_max)) * sd  # [num, K, K]
    return np.einsum("ik,nkl,jl->nij", phi, xi, phi, optimize=True)


def darcy_coefficient(z: np.ndarray, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """psi(z): ``high`` where z >= 0, ``low`` where z < 0 (FNO sec. 5.2: 12 and 3)."""
    return np.where(z >= 0, high, low)


# ----------------------------------------------------------------------------- Burgers
def _etdrk4_coefficients(L: np.ndarray, dt: float, m: int = 32):
    """Kassam & Trefethen (2005) coefficients for a diagonal linear part ``L`` (contour integral)."""
    E, E2 = np.exp(dt * L), np.exp(dt * L / 2)
    r = np.exp(1j * np.pi * (np.arange(1, m + 1) - 0.5) / m)  # [m] points on the unit circle
    LR = dt * L[:, None] + r[None, :]  # [K, m]
    Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = dt * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, axis=1))
    f2 = dt * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, axis=1))
    return E, E2, Q, f1, f2, f3


def burgers_etdrk4(
    u0: np.ndarray, nu: float = 0.1, t_end: float = 1.0, dt: float = 1e-3, batch: int = 64
) -> np.ndarray:
    """Solve u_t + (u^2/2)_x = nu u_xx on the periodic unit interval from ``u0`` ``[num, n]`` (values
    at x_j = j / n) to ``t_end``; returns ``[num, n]``. Pseudo-spectral + ETDRK4 (module docstring)."""
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 2 or u0.shape[1] < 4 or u0.shape[1] % 2:
        raise ValueError(f"burgers_etdrk4: u0 must be [num, n] with n even >= 4, got shape {u0.shape}")
    if nu <= 0 or dt <= 0 or t_end < 0:
        raise ValueError(f"burgers_etdrk4: need nu > 0, dt > 0, t_end >= 0; got nu={nu}, dt={dt}, t_end={t_end}")
    n = u0.shape[1]
    k = np.arange(n // 2 + 1)  # rfft wavenumbers
    L = -nu * (2 * np.pi * k) ** 2
    g = -0.5j * (2 * np.pi * k) * (k < n / 3)  # -(1/2) d/dx, 2/3-rule dealiasing
    steps = max(1, int(round(t_end / dt)))
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(L, t_end / steps)

    def nonlin(v):  # v: [b, n/2+1] -> N(v)
        return g * np.fft.rfft(np.fft.irfft(v, n=n, axis=-1) ** 2, axis=-1)

    out = np.empty_like(u0)
    for i in range(0, u0.shape[0], batch):
        v = np.fft.rfft(u0[i : i + batch], axis=-1)  # [b, n/2+1]
        for _ in range(steps):
            Nv = nonlin(v)
            a = E2 * v + Q * Nv
            Na = nonlin(a)
            b = E2 * v + Q * Na
            Nb = nonlin(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = nonlin(c)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        out[i : i + batch] = np.fft.irfft(v, n=n, axis=-1)
    return out


def burgers_cole_hopf(x: np.ndarray, t: float, nu: float = 0.1, c: float = 2.0, k: int = 1) -> np.ndarray:
    """Closed-form Burgers solution from the Cole-Hopf transform u = -2 nu phi_x / phi with the heat
    solution phi = c + e^{-nu (2 pi k)^2 t} cos(2 pi k x) (c > 1):
    u = 2 nu (2 pi k) e^{-nu (2 pi k)^2 t} sin(2 pi k x) / (c + e^{-nu (2 pi k)^2 t} cos(2 pi k x))."""
    w = 2 * np.pi * k
    e = np.exp(-nu * w**2 * t)
    return 2 * nu * w * e * np.sin(w * x) / (c + e * np.cos(w * x))


# ----------------------------------------------------------------------------- Darcy
def _dst1(x: np.ndarray, axis: int) -> np.ndarray:
    """Unnormalised DST-I along ``axis``: y_p = sum_{i=1}^{n} x_i sin(pi p i / (n + 1)), via a real FFT
    of the odd extension of length 2(n + 1)."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    zeros = np.zeros(x.shape[:-1] + (1,))
    ext = np.concatenate([zeros, x, zeros, -x[..., ::-1]], axis=-1)  # [..., 2(n+1)]
    y = -np.fft.rfft(ext, axis=-1).imag[..., 1 : n + 1] / 2
    return np.moveaxis(y, -1, axis)


def darcy_operator(a: np.ndarray, u: np.ndarray, h: float) -> np.ndarray:
    """Apply the 5-point operator -div(a grad .) to interior values ``u`` ``[b, n, n]`` (zero on the
    boundary) with node coefficients ``a`` ``[b, n+2, n+2]``; faces get the mean of their two nodes."""
    up = np.pad(u, ((0, 0), (1, 1), (1, 1)))  # [b, n+2, n+2] with the zero boundary
    ax = 0.5 * (a[:, 1:, 1:-1] + a[:, :-1, 1:-1])  # faces between rows i, i+1: [b, n+1, n]
    ay = 0.5 * (a[:, 1:-1, 1:] + a[:, 1:-1, :-1])  # faces between cols j, j+1: [b, n, n+1]
    fx = ax * (up[:, 1:, 1:-1] - up[:, :-1, 1:-1])  # a du/dx * h on the faces
    fy = ay * (up[:, 1:-1, 1:] - up[:, 1:-1, :-1])
    return -((fx[:, 1:] - fx[:, :-1]) + (fy[:, :, 1:] - fy[:, :, :-1])) / h**2


def darcy_solve(
    a: np.ndarray,
    f: float | np.ndarray = 1.0,
    tol: float = 1e-10,
    max_iter: int = 500,
    batch: int = 16,
    return_iters: bool = False,
):
    """Solve -div(a grad u) = f, u = 0 on the boundary, for node coefficients ``a`` ``[num, s, s]`` on the
    s x s grid of [0,1]^2; returns u ``[num, s, s]`` (zeros on the boundary). ``f`` is a scalar or an
    ``[num, s, s]`` array (its interior values are used). PCG with a fast-Poisson preconditioner, stopped
    when the relative residual ||r|| / ||f|| < ``tol``; raises RuntimeError if it does not converge."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 3:
        raise ValueError(f"darcy_solve: a must be [num, s, s] with s >= 3, got shape {a.shape}")
    if not np.all(a > 0):
        raise ValueError("darcy_solve: the coefficient a must be positive everywhere")
    num, s = a.shape[0], a.shape[1]
    n, h = s - 2, 1.0 / (s - 1)
    p = np.arange(1, n + 1)
    lam1 = (4 / h**2) * np.sin(np.pi * p / (2 * (n + 1))) ** 2
    out = np.zeros_like(a)
    iters = []
    for i0 in range(0, num, batch):
        ab = a[i0 : i0 + batch]
        b = ab.shape[0]
        c = np.exp(np.log(ab).mean(axis=(1, 2)))[:, None, None]  # preconditioner's constant coefficient
        lam = c * (lam1[:, None] + lam1[None, :])[None]  # [b, n, n]
        scale = (2.0 / (n + 1)) ** 2  # DST-I is its own inverse up to this

        def precond(r):
            return scale * _dst1(_dst1(_dst1(_dst1(r, 1), 2) / lam, 1), 2)

        rhs = (
            np.broadcast_to(np.asarray(f, dtype=np.float64), (num, s, s))[i0 : i0 + b, 1:-1, 1:-1]
            if np.ndim(f)
            else np.full((b, n, n), float(f))
        )
        x = np.zeros((b, n, n))
        r = rhs.copy()
        z = precond(r)
        d = z.copy()
        rz = np.sum(r * z, axis=(1, 2))
        norm_f = np.sqrt(np.sum(rhs**2, axis=(1, 2)))
        active = np.ones(b, dtype=bool)  # samples still iterating
        for it in range(1, max_iter + 1):
            Ad = darcy_operator(ab, d, h)
            dAd = np.sum(d * Ad, axis=(1, 2))
            alpha = np.where(active, rz / np.where(active, dAd, 1.0), 0.0)  # converged samples stay put
            x += alpha[:, None, None] * d
            r -= alpha[:, None, None] * Ad
            res = np.sqrt(np.sum(r**2, axis=(1, 2))) / np.maximum(norm_f, 1e-300)
            active &= res >= tol
            if not active.any():
                break
            z = precond(r)
            rz_new = np.sum(r * z, axis=(1, 2))
            d = z + np.where(active, rz_new / np.where(active, rz, 1.0), 0.0)[:, None, None] * d
            rz = rz_new
        else:
            raise RuntimeError(
                f"darcy_solve: PCG did not reach tol {tol} in {max_iter} iterations "
                f"(worst relative residual {res.max():.2e})"
            )
        iters.append(it)
        out[i0 : i0 + b, 1:-1, 1:-1] = x
    return (out, iters) if return_iters else out
