"""Initialisations of diagonal state-space models.

S4D (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal State
Space Models", Section 4 / Table 2): a real SSM of state size ``N`` with a diagonal complex
``A`` is kept as ``N/2`` modes, one per conjugate pair (the output is ``2 Re(C x)``):

* ``lin``  (S4D-Lin):  ``A_n = -1/2 + i pi n``
* ``inv``  (S4D-Inv):  ``A_n = -1/2 + i (N/pi) (N/(2n+1) - 1)``
* ``legs`` (S4D-LegS): the diagonal ``Λ`` of the normal part of HiPPO-LegS (its eigenvalues,
  ``Re = -1/2``), with ``B = V* B_legs`` in the same eigenbasis (:func:`longseq.ssm.hippo.dplr_legs`)
* ``real`` (S4D-Real): ``A_n = -(n + 1)``

for ``n = 0 .. N/2 - 1``; ``B = 1`` except for ``legs``. The step size is drawn per channel,
``log dt ~ U[log dt_min, log dt_max]`` (defaults 1e-3, 1e-1; S4 Section 4 / Appendix).

DSS (Gupta, Gu, Berant 2022, "Diagonal State Spaces are as Effective as Structured State
Spaces", Section 3.3) initialises ``Λ`` with the eigenvalues of the normal part of HiPPO-LegS
of size ``2N`` that have positive imaginary part ("skew-HiPPO"): the ``legs`` init above with
``N`` complex modes.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["INITS", "diagonal_init", "log_dt_init"]

INITS = ("lin", "inv", "legs", "real")


def diagonal_init(N: int, init: str = "lin") -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)``, each complex128 ``[N/2]``: the modes of a diagonal SSM of state size ``N``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if not isinstance(N, int) or N < 2 or N % 2:
        raise ValueError(f"d_state must be an even int >= 2 (N/2 conjugate-pair modes), got {N!r}")
    n = torch.arange(N // 2, dtype=torch.float64)
    B = torch.ones(N // 2, dtype=torch.complex128)
    if init == "lin":
        A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    elif init == "inv":
        A = torch.complex(torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1))
    elif init == "real":
        A = torch.complex(-(n + 1), torch.zeros_like(n))
    else:
        A, B = (t.clone() for t in _legs(N))
    return A, B


@functools.lru_cache(maxsize=16)
def _legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .hippo import dplr_legs  # imported lazily: only this init needs the eigensolver

    with torch.device("cpu"):  # cached: never let an ambient default device (e.g. "meta") into the cache
        A, _, B, _ = dplr_legs(N, conj_sym=True)
    return A, B


def log_dt_init(H: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> torch.Tensor:
    """``log dt [H]`` drawn uniformly in ``[log dt_min, log dt_max]`` (float64)."""
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, dtype=torch.float64)
    return math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))
