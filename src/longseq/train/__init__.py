"""Training: :func:`train` runs a model on a task with a :class:`TrainConfig`; :func:`build_model`
makes the model a task calls for (classifier, causal LM or masked LM) from the task's preset defaults;
:func:`finetune_model` makes a classifier from a pre-trained MaskedLM's encoder."""

from .builder import build_model, build_model_from_config
from .finetune import finetune_model
from .trainer import TrainConfig, evaluate, train

__all__ = ["TrainConfig", "build_model", "build_model_from_config", "evaluate", "finetune_model", "train"]
