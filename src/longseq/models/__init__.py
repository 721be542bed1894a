"""Models assembled from token mixers: :class:`SequenceClassifier`, :class:`CausalLM`, :class:`MaskedLM`
(with :mod:`.finetune`: its encoder into a classifier), and
``load(dir)`` for saved models, and named configurations (:func:`build_preset`)."""

from .backbone import Backbone, Block, layer_plan
from .base import LongseqModel, load
from .causal_lm import CausalLM
from .classifier import SequenceClassifier
from .config import LayerSpec, ModelConfig, parse_layers
from .finetune import LoadReport, classifier_from_pretrained, freeze_embeddings, layerwise_lr_decay, load_encoder
from .masked_lm import MaskedLM
from .presets import PRESETS, build_preset, preset_config

__all__ = [
    "Backbone",
    "Block",
    "CausalLM",
    "LayerSpec",
    "LoadReport",
    "LongseqModel",
    "MaskedLM",
    "ModelConfig",
    "PRESETS",
    "SequenceClassifier",
    "build_preset",
    "classifier_from_pretrained",
    "freeze_embeddings",
    "layer_plan",
    "layerwise_lr_decay",
    "load",
    "load_encoder",
    "parse_layers",
    "preset_config",
]
