"""Differentiable stacks for stack RNNs: the nondeterministic stack of Lang's algorithm
(:mod:`longseq.ops.stack.lang`, DuSell & Chiang 2020-22) with its brute-force reference
(:mod:`longseq.ops.stack.naive`), and the superposition stack (:mod:`longseq.ops.stack.superposition`,
Joulin & Mikolov 2015). The models built on them are mixers in :mod:`longseq.mixers.stack_rnn`."""

from .lang import LangStack, scale_actions
from .naive import brute_force_alpha
from .superposition import superposition_update

TWINS: dict = {}
"""No autograd Function here: autograd differentiates Lang's algorithm (tests/test_stack_rnn.py ties it
to :func:`brute_force_alpha`, values and gradients)."""

__all__ = ["LangStack", "brute_force_alpha", "scale_actions", "superposition_update", "TWINS"]
