"""FAVOR+ positive random features (:func:`favor_softmax_features`) and blocked bidirectional FAVOR+
attention (:func:`favor_attention_bidirectional`), with their autograd references (:mod:`.naive`)."""

from .fused import _FavorBidirectional, _FavorFeatures, favor_attention_bidirectional, favor_softmax_features
from .naive import favor_attention_bidirectional_naive, favor_softmax_features_naive

TWINS = {
    _FavorFeatures: (favor_softmax_features, favor_softmax_features_naive),
    _FavorBidirectional: (favor_attention_bidirectional, favor_attention_bidirectional_naive),
}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = [
    "favor_softmax_features",
    "favor_attention_bidirectional",
    "favor_softmax_features_naive",
    "favor_attention_bidirectional_naive",
    "TWINS",
]
