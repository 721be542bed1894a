"""Normalised linear attention: chunk-parallel (:func:`linear_attention_chunk`), token by token
(:func:`linear_attention_recurrent`), bidirectional, and the dense reference
(:func:`linear_attention_naive`). Plain torch autograd, no hand-written Function."""

from .chunk import linear_attention_bidirectional, linear_attention_chunk
from .naive import linear_attention_naive
from .recurrent import linear_attention_recurrent

TWINS: dict = {}
"""No autograd Function here (the fast forms are differentiated by autograd)."""

__all__ = [
    "linear_attention_naive",
    "linear_attention_chunk",
    "linear_attention_recurrent",
    "linear_attention_bidirectional",
    "TWINS",
]
