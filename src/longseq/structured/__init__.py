"""Structured latent-variable models with exact dynamic-programming inference (not mixers)."""

from .lcfrs import LCFRS2
from .pcfg import PCFG, bench_pcfg

__all__ = ["PCFG", "LCFRS2", "bench_pcfg"]
