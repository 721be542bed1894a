"""Small building blocks shared by mixers and models (rotary embeddings, norms, feed-forwards)."""

from .rotary import RotaryEmbedding, apply_rotary
from .layers import RMSNorm, FeedForward, make_norm, sinusoidal_table

__all__ = ["RotaryEmbedding", "apply_rotary", "RMSNorm", "FeedForward", "make_norm", "sinusoidal_table"]
