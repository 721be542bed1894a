"""``longseq train --init-from DIR``: the fine-tuning part of the train command (kept out of train.py).

Model flags given with ``--init-from`` must agree with the pre-trained encoder (they are checked,
not applied: a different value is the architecture mismatch ``ValueError``), except ``--dropout``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._kv import parse_kv, parse_mixer


def finetune_from_args(args, task):
    from ..train import finetune_model

    if args.model_preset is not None:
        raise ValueError(
            "--model-preset cannot be combined with --init-from (the architecture comes from the pre-trained encoder)"
        )
    mixer = parse_mixer(args.mixer)  # a name or a per-layer stack, as for a new model
    over = dict(
        mixer=mixer,
        d_model=args.d_model,
        n_layers=args.n_layers,
        num_heads=args.num_heads,
        position=args.position,
        norm=args.norm,
        ffn=args.ffn,
        mixer_options=parse_kv(args.mixer_option, "--mixer-option") or None,
        ffn_options=parse_kv(args.ffn_option, "--ffn-option") or None,
        position_options=parse_kv(args.position_option, "--position-option") or None,
        embedding=args.embedding,
        embedding_options=parse_kv(args.embedding_option, "--embedding-option") or None,
        scale_invariant=args.scale_invariant,
        shortcuts=args.shortcuts,
        dropout=args.dropout,
    )
    return finetune_model(
        task, args.init_from, layer_lr_decay=args.layer_lr_decay, freeze_embeddings=args.freeze_embeddings, **over
    )


def record_init(report, out: Path, args, main: bool) -> dict:
    """Print the load report, write ``OUT/init_report.json``; returns the run-config entry."""
    from ..utils.io import atomic_write

    rec = {**report.to_dict(), "layer_lr_decay": args.layer_lr_decay, "freeze_embeddings": args.freeze_embeddings}
    if main:
        print(report)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "init_report.json", lambda tmp: Path(tmp).write_text(json.dumps(rec, indent=2)))
    return {
        "source": report.source,
        "loaded": len(report.loaded),
        "skipped": len(report.skipped),
        "initialised": len(report.initialised),
        "layer_lr_decay": args.layer_lr_decay,
        "freeze_embeddings": args.freeze_embeddings,
    }
