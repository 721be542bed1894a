"""Models assembled from token mixers: :class:`SequenceClassifier`, :class:`CausalLM`, and
``load(dir)`` for saved models."""

from .backbone import Backbone, Block, layer_plan
from .base import LongseqModel, load
from .causal_lm import CausalLM
from .classifier import SequenceClassifier

__all__ = ["Backbone", "Block", "CausalLM", "LongseqModel", "SequenceClassifier", "layer_plan", "load"]
