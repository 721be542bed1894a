"""The HMM forward algorithm (scaled, full or factorised transition) with a hand-written backward;
``naive.py`` is the plain-autograd reference it is tested against (tests/ops/test_hmm_forward.py)."""

from .forward import _HMMForward, hmm_forward
from .naive import hmm_forward_naive

TWINS = {_HMMForward: (hmm_forward, hmm_forward_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["hmm_forward", "hmm_forward_naive", "TWINS"]
