"""``longseq arena --protocol pretrain-finetune`` (kept out of arena.py): see :mod:`longseq.arena.pretrain`."""

from __future__ import annotations

from pathlib import Path

from ._kv import parse_kv


def run_protocol(args) -> int:
    from ..arena.pretrain import run_pretrain_finetune, write_pf_report
    from ._kv import per_name as _per_name

    out = Path(args.out)
    if args.report_only:
        if not (out / "settings.json").is_file():
            raise FileNotFoundError(f"--report-only: no pre-train/fine-tune settings.json in {out}")
        write_pf_report(out)
        print((out / "pretrain_finetune.md").read_text())
        return 0
    if args.demo:
        raise ValueError("--demo is the standard arena's subset; it does not apply to --protocol pretrain-finetune")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    run_pretrain_finetune(
        args.mixers,
        args.tasks or "text,retrieval",
        out,
        pretrain_task=args.pretrain_task,
        preset=args.preset,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        seeds=seeds,
        threads=args.threads,
        device=args.device,
        task_options=_per_name(args.task_option, "--task-option"),
        model_options=parse_kv(args.model_option, "--model-option"),
        train_options=parse_kv(args.train_option, "--train-option"),
        mixer_options=_per_name(args.mixer_option, "--mixer-option"),
        tolerance=args.tolerance,
        layer_lr_decay=args.layer_lr_decay,
        freeze_embeddings=args.freeze_embeddings,
        resume=args.resume,
        progress=args.progress,
    )
    print((out / "pretrain_finetune.md").read_text())
    return 0
