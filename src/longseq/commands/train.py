"""``longseq train``: train one mixer on one task and save the run (metrics, checkpoint, model)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def parse_kv(items: list[str] | None, what: str) -> dict:
    """``["window=64", "rope=true"]`` -> ``{"window": 64, "rope": True}`` (values parsed as JSON when possible)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults come from the task preset)")
    g.add_argument("--d-model", type=int)
    g.add_argument("--n-layers", type=int)
    g.add_argument("--num-heads", type=int)
    g.add_argument("--position", choices=["none", "sinusoidal", "learned", "rope", "deberta", "deberta_v2",
                                          "diet_abs", "diet_rel"],
                   help="deberta/deberta_v2 = DeBERTa disentangled attention (He et al. 2021; v2: log buckets), "
                        "diet_abs/diet_rel = DIET logit terms (Chen et al. 2021); see longseq.nn.relpos")
    g.add_argument("--position-option", action="append", metavar="KEY=VALUE",
                   help="deberta/diet option (repeatable): span, buckets, max_position, rank, num_segments")
    g.add_argument("--norm", choices=["layernorm", "rmsnorm", "none"])
    g.add_argument("--ffn", choices=["mlp", "swiglu", "geglu", "moe", "tat", "none"],
                   help="feed-forward kind; moe = Switch Transformer top-1 experts (Fedus et al. 2021); "
                        "tat = TAT leaky-ReLU MLP for deep vanilla nets (He et al. 2023)")
    g.add_argument("--ffn-option", action="append", metavar="KEY=VALUE",
                   help="feed-forward option (repeatable): moe: num_experts, capacity_factor, eval_capacity_factor, "
                        "aux_loss_weight, z_loss_weight, expert; mlp/swiglu/geglu: linear=dense|butterfly|tensor_chain "
                        "and that layer's options (butterfly: block, butterfly_size, n_factors, rank, gate; "
                        "tensor_chain: ratio, length, bond)")
    g.add_argument("--dropout", type=float)
    g.add_argument("--mixer-option", action="append", metavar="KEY=VALUE", help="option passed to every mixer (repeatable)")
    g.add_argument("--embedding", choices=["token", "hsoftpos", "patches"],
                   help="input front-end: token table; hsoftpos = Anthe's H-SoftPOS; patches = ViT patches of "
                        "square images (image/pathfinder; pools from the class token)")
    g.add_argument("--embedding-option", action="append", metavar="KEY=VALUE",
                   help="embedding option (repeatable): hsoftpos: levels, kernel_size; patches: patch_size, "
                        "cls_token, pixel=value|embed, pixel_dim, image_size")
    g.add_argument("--model-preset", choices=["spade", "h3_hybrid", "anthe"],
                   help="named model configuration (mixer stack, embedding, FFN) over the task defaults; "
                        "explicit --mixer and model flags still win")
    g.add_argument("--model-preset-option", action="append", metavar="KEY=VALUE",
                   help="model preset option (repeatable): spade: window, ssm, combine; h3_hybrid: attn_layers "
                        "(0-indexed list), attention; anthe: tc_attention, tc_ffn, tc_length, levels")
    g.add_argument("--scale-invariant", action="store_true", default=None,
                   help="SIBERT's scale-invariant architecture (softmax layers become si_attention); "
                        "train it with --optimizer sgd_si")
    g.add_argument("--no-shortcuts", dest="shortcuts", action="store_false", default=None,
                   help="drop the residual connections (vanilla transformer; with --norm none --mixer espa "
                        "--ffn tat: He et al. 2023's E-SPA recipe)")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a mixer on a task", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, help="task name (see `longseq list --tasks`)")
    p.add_argument("--mixer",
                   help="mixer name, or comma-separated names, one per layer (hybrid stack); "
                        "default softmax, or the --model-preset's stack")
    p.add_argument("--preset", default="quick", help="task preset (quick, lra, ...)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task setting override (repeatable)")
    p.add_argument("--out", help="run directory (default runs/TASK-MIXER)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0, help="seeds data generation, initialisation and batch order")
    t = p.add_argument_group("trainer (defaults come from the task preset)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup", type=int)
    t.add_argument("--grad-clip", type=float)
    t.add_argument("--grad-accum", type=int)
    t.add_argument("--optimizer", choices=["adamw", "sgd", "sgd_si"],
                   help="adamw (default); sgd: plain SGD + weight decay; sgd_si: SIBERT's SGD + weight decay with "
                        "the gradient norm clipped at SI_CLIP * sqrt(2 wd / lr) * ||W||")
    t.add_argument("--si-clip", type=float, help="sgd_si clipping factor C (default 2; 0 disables clipping)")
    t.add_argument("--eval-every", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--device", default="auto")
    t.add_argument("--no-progress", action="store_true")
    d = p.add_argument_group("several processes (launch with: torchrun --nproc-per-node N -m longseq train ...)")
    d.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimizer state (FSDP) instead of replicating them (DDP)")
    d.add_argument("--dist-timeout", type=float, default=300.0,
                   help="seconds a process waits for its peers in a collective before failing")
    f = p.add_argument_group("fine-tuning a pre-trained encoder (longseq.train.finetune)")
    f.add_argument("--init-from", metavar="RUN_OR_MODEL_DIR",
                   help="start a classifier from the encoder of a saved MaskedLM (a run dir or its model/ dir); "
                        "the architecture comes from it; prints and saves (OUT/init_report.json) every tensor "
                        "loaded, skipped or newly initialised")
    f.add_argument("--layer-lr-decay", type=float, metavar="DECAY",
                   help="with --init-from: lr x DECAY^depth from the top (head 1, last block DECAY, ..., embeddings "
                        "DECAY^(n_layers+1))")
    f.add_argument("--freeze-embeddings", action="store_true", help="with --init-from: do not train the embeddings")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import tasks
    from ..train import TrainConfig, build_model, train

    if args.init_from is None and (args.layer_lr_decay is not None or args.freeze_embeddings):
        raise ValueError("--layer-lr-decay and --freeze-embeddings apply to fine-tuning: give --init-from")
    task = tasks.build(args.task, preset=args.preset, seed=args.seed, **parse_kv(args.task_option, "--task-option"))
    mixer = None if args.mixer is None else args.mixer.split(",") if "," in args.mixer else args.mixer
    label = args.mixer or args.model_preset or "softmax"
    mixer_options = parse_kv(args.mixer_option, "--mixer-option") or None
    ffn_options = parse_kv(args.ffn_option, "--ffn-option") or None
    torch.manual_seed(args.seed)       # initialisation (torch's default seed differs per process)
    if args.init_from is not None:
        from ._finetune import finetune_from_args

        model, init_report = finetune_from_args(args, task)
    else:
        init_report = None
        model = build_model(task, mixer, d_model=args.d_model, n_layers=args.n_layers, num_heads=args.num_heads,
                            position=args.position, norm=args.norm, ffn=args.ffn, dropout=args.dropout,
                            mixer_options=mixer_options, scale_invariant=args.scale_invariant,
                            shortcuts=args.shortcuts, ffn_options=ffn_options,
                            position_options=parse_kv(args.position_option, "--position-option") or None,
                            embedding=args.embedding,
                            embedding_options=parse_kv(args.embedding_option, "--embedding-option") or None,
                            model_preset=args.model_preset,
                            model_preset_options=parse_kv(args.model_preset_option, "--model-preset-option") or None)
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "grad_clip",
                                               "grad_accum", "eval_every", "log_every", "checkpoint_every", "threads",
                                               "optimizer", "si_clip")
                 if getattr(args, k) is not None}
    if overrides.get("si_clip") == 0:
        overrides["si_clip"] = None
    cfg = TrainConfig.from_dict({**task.train_defaults, **overrides, "seed": args.seed, "device": args.device,
                                 "progress": not args.no_progress,
                                 "fsdp": args.fsdp, "dist_timeout": args.dist_timeout})
    out = Path(args.out or f"runs/{args.task}-{label.replace(',', '+')}")
    main = int(os.environ.get("RANK", "0")) == 0     # under torchrun only rank 0 reports
    if main:
        print(f"task {args.task} ({args.preset}), mixer {label}: {model.num_parameters():,} parameters -> {out}")
    run_config = {"cli": {"task": args.task, "mixer": label, "preset": args.preset}}
    if init_report is not None:
        from ._finetune import record_init

        run_config["init_from"] = record_init(init_report, out, args, main)
    final = train(model, task, cfg, out, resume=args.resume, run_config=run_config)
    metric = task.meta.metric
    for split in ("validation", "test") if main else ():
        m = final[split]
        print(f"{split}: {metric} {m.get(metric, m['accuracy']):.4f}  loss {m['loss']:.4f}")
    return 0
