"""Pure-PyTorch attention kernels shared by several mixers (fast paths and their references)."""

from .block_sparse import block_gather_attention, dedupe_blocks, local_attention, merge_attention
from .linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_naive,
    linear_attention_recurrent,
)

__all__ = [
    "local_attention",
    "block_gather_attention",
    "merge_attention",
    "dedupe_blocks",
    "linear_attention_naive",
    "linear_attention_chunk",
    "linear_attention_recurrent",
    "linear_attention_bidirectional",
]
