"""Training: :func:`train` runs a model on a task with a :class:`TrainConfig`; :func:`build_model`
makes the model a task calls for (classifier or causal LM) from the task's preset defaults."""

from .builder import build_model, build_model_from_config
from .trainer import TrainConfig, evaluate, train

__all__ = ["TrainConfig", "build_model", "build_model_from_config", "evaluate", "train"]
