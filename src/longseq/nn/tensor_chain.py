"""Tensor-chain (tensor-train / matrix-product-operator) linear layer of Anthe
(Herranz-Celotti & Rrapaj 2023, "Less is More! A slim architecture for optimal language
translation", arXiv 2305.10991, sec. 3 "Tensor Chains"; official TF code
``neural_models_tf/tensor_chain/utils.py::get_tc_kernel``).

The dense kernel ``W in R^{d_in x d_out}`` is never stored. ``d_in = i_1 ... i_K`` and
``d_out = o_1 ... o_K`` are factorised and ``W`` is the contraction of a chain of ``K`` cores
``G_k in R^{i_k x b_{k-1} x b_k x o_k}`` (``b_0 = b_K = 1``, all inner bonds ``= bond``)::

    W[(i_1 .. i_K), (o_1 .. o_K)] = sum_{b_1..b_{K-1}} G_1[i_1, b_1, o_1] G_2[i_2, b_1, b_2, o_2] ... G_K[i_K, b_{K-1}, o_K]

(input and output multi-indices are row-major, ``i_1`` most significant). As in the official code
``W`` is rebuilt every forward and applied with one ordinary matmul, ``y = x W + bias``: the layer
saves parameters, not FLOPs.

Parameter ratio: ``ratio`` asks for ``#core params ~= ratio * d_in * d_out``. With
``c = i_1 o_1 + i_K o_K`` (end cores) and ``a = sum_{1<k<K} i_k o_k`` (middle cores) the count is
``c * bond + a * bond^2``; ``bond`` is the largest integer with at most that many parameters,
clamped below at 2 as in the official code (so very small ratios, e.g. Anthe's FFN ratio .005,
give bond 2 and a larger true ratio: see :attr:`TensorChainLinear.true_ratio`). Anthe's settings:
q/k/v projections ratio .07, FFN matrices ratio .005, length (number of cores) 2.

Decisions on ambiguous points:

* Factorisation of ``d_in``/``d_out`` into ``K`` factors: our own balanced rule (prime factors,
  largest first, each multiplied into the currently smallest factor). The official code uses
  several ad-hoc helpers (``get_two_factors`` etc.) that give similar but not always identical
  factors; e.g. 512 -> (32, 16) in both. Prime sizes give a factor 1 (still valid).
* Initialisation (a deliberate FIX of the official code): the official code initialises every
  core separately with Keras' ``glorot_uniform``, so the variance of the reconstructed ``W`` is
  ``bond^(K-1) * prod_k Var(G_k)`` -- uncontrolled, depending on the factor sizes and bond. Here
  every core is ``N(0, s^2)`` with ``bond^(K-1) * s^(2K) = sigma^2``, so each entry of ``W`` has
  exactly the variance ``sigma^2`` of the dense layer it replaces (products along different bond
  paths are uncorrelated, each has variance ``s^(2K)``). ``sigma^2`` defaults to the variance of
  ``torch.nn.Linear``'s default init (uniform on ``+-1/sqrt(d_in)``, i.e. ``1 / (3 d_in)``);
  ``init_std`` overrides it. The bias uses ``nn.Linear``'s default. The reconstructed entries are
  products of Gaussians (heavier-tailed than the dense init); only the variance is matched.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TensorChainLinear", "balanced_factors", "tensor_chain_bond"]


def balanced_factors(n: int, k: int) -> tuple[int, ...]:
    """Split ``n`` into ``k`` integer factors (product ``n``) that are as equal as the primes allow,
    largest first: ``balanced_factors(512, 2) == (32, 16)``, ``balanced_factors(192, 2) == (16, 12)``."""
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    primes, m, p = [], n, 2
    while p * p <= m:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    if m > 1:
        primes.append(m)
    bins = [1] * k
    for q in sorted(primes, reverse=True):
        bins[bins.index(min(bins))] *= q
    return tuple(sorted(bins, reverse=True))


def tensor_chain_bond(in_factors, out_factors, target_params: float) -> int:
    """Largest bond whose core parameter count ``c b + a b^2`` is at most ``target_params``, at least 2."""
    sizes = [i * o for i, o in zip(in_factors, out_factors)]
    c = sizes[0] + sizes[-1]
    a = sum(sizes[1:-1])
    if a == 0:
        b = target_params / c
    else:
        b = (-c + math.sqrt(c * c + 4 * a * target_params)) / (2 * a)
    return max(2, int(b + 1e-9))


class TensorChainLinear(nn.Module):
    """``y = x W + bias`` with ``W [d_in, d_out]`` a chain of ``length`` cores (see module docstring).

    Options: ``ratio`` (target fraction of the dense parameter count, default 0.2 as the official
    code's fallback), ``length`` (number of cores K >= 2, default 2 as in Anthe), ``bond`` (explicit
    bond dimension; overrides ``ratio``), ``init_std`` (std of the reconstructed weight; default
    that of ``nn.Linear``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        ratio: float = 0.2,
        length: int = 2,
        bond: int | None = None,
        init_std: float | None = None,
    ):
        super().__init__()
        if not isinstance(length, int) or isinstance(length, bool) or length < 2:
            raise ValueError(f"tensor_chain length must be an int >= 2, got {length!r}")
        if bond is None and not (isinstance(ratio, (int, float)) and 0 < ratio < 1):
            raise ValueError(f"tensor_chain ratio must be a number in (0, 1), got {ratio!r}")
        if bond is not None and (not isinstance(bond, int) or isinstance(bond, bool) or bond < 1):
            raise ValueError(f"tensor_chain bond must be a positive int or None, got {bond!r}")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"tensor_chain init_std must be positive or None, got {init_std!r}")
        self.in_features, self.out_features, self.length = in_features, out_features, length
        self.in_factors = balanced_factors(in_features, length)
        self.out_factors = balanced_factors(out_features, length)
        if bond is None:
            bond = tensor_chain_bond(self.in_factors, self.out_factors, ratio * in_features * out_features)
        self.bond = bond
        self.init_std = init_std if init_std is not None else 1.0 / math.sqrt(3 * in_features)
        bonds = [1] + [bond] * (length - 1) + [1]
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(i, bonds[k], bonds[k + 1], o))  # [i_k, b_{k-1}, b_k, o_k]
            for k, (i, o) in enumerate(zip(self.in_factors, self.out_factors))
        )
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        K = self.length
        core_std = (self.init_std**2 / self.bond ** (K - 1)) ** (1.0 / (2 * K))
        for g in self.cores:
            nn.init.normal_(g, 0.0, core_std)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def weight(self) -> torch.Tensor:
        """The reconstructed kernel ``W [d_in, d_out]`` (``y = x W``; note: transposed w.r.t. ``nn.Linear.weight``)."""
        w = self.cores[0][:, 0]  # [I, b, O] with I = i_1, O = o_1
        for g in self.cores[1:]:  # g: [i, b, c, o]
            w = torch.einsum("xby,ibcz->xicyz", w, g)  # [I, i, c, O, o]
            I, i, c, O, o = w.shape
            w = w.reshape(I * i, c, O * o)
        return w[:, 0]  # [d_in, d_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight().to(x.dtype)
        y = x @ w  # [..., d_out]
        return y if self.bias is None else y + self.bias.to(x.dtype)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def true_ratio(self) -> float:
        """Core parameters / dense ``d_in * d_out``."""
        return sum(g.numel() for g in self.cores) / (self.in_features * self.out_features)

    def flops(self, n_tokens: int) -> float:
        """Forward FLOPs for ``n_tokens`` inputs: rebuilding W (multiply-adds of the chain
        contraction, once per forward) + the dense matmul + bias."""
        rebuild, I, O, b = 0, self.in_factors[0], self.out_factors[0], self.bond
        for k in range(1, self.length):
            i, o = self.in_factors[k], self.out_factors[k]
            c = b if k < self.length - 1 else 1
            rebuild += 2 * I * O * b * i * c * o
            I, O = I * i, O * o
        dense = 2 * n_tokens * self.in_features * self.out_features
        return float(rebuild + dense + (n_tokens * self.out_features if self.bias is not None else 0))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, length={self.length}, "
            f"in_factors={self.in_factors}, out_factors={self.out_factors}, bond={self.bond}, "
            f"ratio={self.true_ratio:.4f}, bias={self.bias is not None}"
        )
