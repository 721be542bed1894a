"""Treeformer's path gathers one level at a time (:func:`path_logits`, :func:`path_mix`) and their
gather-everything references (:mod:`.naive`)."""

from .fused import _PathLogits, _PathMix, path_logits, path_mix
from .naive import path_logits_naive, path_mix_naive

TWINS = {_PathLogits: (path_logits, path_logits_naive), _PathMix: (path_mix, path_mix_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["path_logits", "path_mix", "path_logits_naive", "path_mix_naive", "TWINS"]
