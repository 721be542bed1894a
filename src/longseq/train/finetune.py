"""Fine-tuning a pre-trained encoder on a classification task (``longseq train --init-from``).

    task = longseq.tasks.build("retrieval", preset="quick")
    model, report = finetune_model(task, "runs/mlm_code-softmax", layer_lr_decay=0.8, freeze_embeddings=False)
    print(report)                       # every tensor: loaded / skipped / newly initialised
    train(model, task, TrainConfig(...), "runs/retrieval-ft", run_config={"init_from": report.to_dict()})

The classifier takes the pre-trained encoder's architecture (vocabulary, width, depth, mixers,
positions: :func:`longseq.models.classifier_from_pretrained`) and the task's number of classes and
pair setting; ``overrides`` may set ``pooling`` and ``dropout`` freely, and encoder settings only
to the values the checkpoint has (anything else is the architecture mismatch ``ValueError``).
The pre-trained vocabulary (257 for the byte MLM tasks: bytes + ``[MASK]``) covers the byte
classification tasks' ids 0-255.
"""

from __future__ import annotations

from typing import Any

from ..models import classifier_from_pretrained, layerwise_lr_decay
from ..models import freeze_embeddings as _freeze
from ..models.finetune import LoadReport
from ..tasks.base import Task


def finetune_model(
    task: Task, init_from, *, layer_lr_decay: float | None = None, freeze_embeddings: bool = False, **overrides: Any
) -> tuple[Any, LoadReport]:
    """``(SequenceClassifier with the pre-trained encoder, LoadReport)`` for ``task`` (see the module docstring)."""
    m = task.meta
    if m.kind != "classification":
        raise ValueError(f"--init-from fine-tunes a classifier; task {m.name!r} is of kind {m.kind!r}")
    over = {k: v for k, v in overrides.items() if v is not None}
    pooling = over.pop("pooling", task.model_defaults.get("pooling", "mean"))
    dropout = over.pop("dropout", None)
    model, report = classifier_from_pretrained(
        init_from, m.num_classes, pooling=pooling, pair=bool(m.extra.get("pair", False)), dropout=dropout, **over
    )
    vocab = model.config["vocab_size"]
    if vocab < m.vocab_size:
        raise ValueError(
            f"the pre-trained encoder's vocabulary ({vocab}) is smaller than task {m.name!r}'s ({m.vocab_size})"
        )
    if layer_lr_decay is not None:
        layerwise_lr_decay(model, layer_lr_decay)
    if freeze_embeddings:
        _freeze(model)
    return model, report
