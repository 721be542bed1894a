"""Block-local and block-sparse softmax attention (:mod:`.block`) and their dense references
(:mod:`.naive`). Plain torch autograd, no hand-written Function."""

from .block import block_gather_attention, dedupe_blocks, local_attention, merge_attention
from .naive import block_mask, local_mask, masked_attention_naive

TWINS: dict = {}
"""No autograd Function here (the blocked kernels are differentiated by autograd)."""

__all__ = [
    "local_attention",
    "block_gather_attention",
    "merge_attention",
    "dedupe_blocks",
    "masked_attention_naive",
    "local_mask",
    "block_mask",
    "TWINS",
]
