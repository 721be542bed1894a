"""Differentiable stacks for stack RNNs: the nondeterministic stack of Lang's algorithm
(:mod:`longseq.stack.lang`, DuSell & Chiang 2020-22) with its brute-force reference
(:mod:`longseq.stack.naive`), and the superposition stack (:mod:`longseq.stack.superposition`,
Joulin & Mikolov 2015). The models built on them are mixers in :mod:`longseq.mixers.stack_rnn`."""

from .lang import LangStack, scale_actions
from .superposition import superposition_update

__all__ = ["LangStack", "scale_actions", "superposition_update"]
