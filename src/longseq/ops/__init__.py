"""Pure-PyTorch attention kernels shared by several mixers (fast paths and their references)."""

from .linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_naive,
    linear_attention_recurrent,
)

__all__ = [
    "linear_attention_naive",
    "linear_attention_chunk",
    "linear_attention_recurrent",
    "linear_attention_bidirectional",
]
