"""Models assembled from token mixers: :class:`SequenceClassifier`, :class:`CausalLM`, and
``load(dir)`` for saved models, and named configurations (:func:`build_preset`)."""

from .backbone import Backbone, Block, layer_plan
from .base import LongseqModel, load
from .causal_lm import CausalLM
from .classifier import SequenceClassifier
from .config import LayerSpec, ModelConfig, parse_layers
from .presets import PRESETS, build_preset, preset_config

__all__ = ["Backbone", "Block", "CausalLM", "LayerSpec", "LongseqModel", "ModelConfig", "PRESETS", "SequenceClassifier",
           "build_preset", "layer_plan", "load", "parse_layers", "preset_config"]
