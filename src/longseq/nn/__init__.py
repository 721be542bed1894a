"""Small building blocks shared by mixers and models (rotary embeddings, norms, feed-forwards)."""

from .layers import FeedForward, RMSNorm, make_norm, sinusoidal_table
from .rotary import RotaryEmbedding, apply_rotary

__all__ = ["RotaryEmbedding", "apply_rotary", "RMSNorm", "FeedForward", "make_norm", "sinusoidal_table"]
