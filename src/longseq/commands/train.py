"""``longseq train``: train one mixer on one task and save the run (metrics, checkpoint, model)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._kv import parse_kv, parse_mixer  # noqa: F401  (re-exported: other code imports them from here)


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults come from the task preset)")
    g.add_argument("--d-model", type=int)
    g.add_argument("--n-layers", type=int)
    g.add_argument("--num-heads", type=int)
    g.add_argument(
        "--position",
        choices=["none", "sinusoidal", "learned", "rope", "deberta", "deberta_v2", "diet_abs", "diet_rel"],
        help="deberta/deberta_v2 = DeBERTa disentangled attention (He et al. 2021; v2: log buckets), "
        "diet_abs/diet_rel = DIET logit terms (Chen et al. 2021); see longseq.nn.relpos",
    )
    g.add_argument(
        "--position-option",
        action="append",
        metavar="KEY=VALUE",
        help="deberta/diet option (repeatable): span, buckets, max_position, rank, num_segments",
    )
    g.add_argument("--norm", choices=["layernorm", "rmsnorm", "none"])
    g.add_argument(
        "--ffn",
        choices=["mlp", "swiglu", "geglu", "moe", "tat", "none"],
        help="feed-forward kind; moe = Switch Transformer top-1 experts (Fedus et al. 2021); "
        "tat = TAT leaky-ReLU MLP for deep vanilla nets (He et al. 2023)",
    )
    g.add_argument(
        "--ffn-option",
        action="append",
        metavar="KEY=VALUE",
        help="feed-forward option (repeatable): moe: num_experts, capacity_factor, eval_capacity_factor, "
        "aux_loss_weight, z_loss_weight, expert; mlp/swiglu/geglu: linear=dense|butterfly|tensor_chain "
        "and that layer's options (butterfly: block, butterfly_size, n_factors, rank, gate; "
        "tensor_chain: ratio, length, bond)",
    )
    g.add_argument("--dropout", type=float)
    g.add_argument(
        "--mixer-option",
        action="append",
        metavar="KEY=VALUE",
        help="option for every layer whose mixer has it (repeatable; an option no layer has is an error)",
    )
    g.add_argument(
        "--embedding",
        choices=["token", "hsoftpos", "patches"],
        help="input front-end: token table; hsoftpos = Anthe's H-SoftPOS; patches = ViT patches of "
        "square images (image/pathfinder; pools from the class token)",
    )
    g.add_argument(
        "--embedding-option",
        action="append",
        metavar="KEY=VALUE",
        help="embedding option (repeatable): hsoftpos: levels, kernel_size; patches: patch_size, "
        "cls_token, pixel=value|embed, pixel_dim, image_size",
    )
    g.add_argument(
        "--model-preset",
        choices=["spade", "h3_hybrid", "anthe"],
        help="named model configuration (mixer stack, embedding, FFN) over the task defaults; "
        "explicit --mixer and model flags still win",
    )
    g.add_argument(
        "--model-preset-option",
        action="append",
        metavar="KEY=VALUE",
        help="model preset option (repeatable): spade: window, ssm, combine; h3_hybrid: attn_layers "
        "(0-indexed list), attention; anthe: tc_attention, tc_ffn, tc_length, levels",
    )
    g.add_argument(
        "--model-config",
        metavar="PATH",
        help="build the model from a ModelConfig JSON file or a saved model directory (every layer's "
        "mixer, options and overrides); the task sets the vocabulary and head; other model flags "
        "are refused with it",
    )
    g.add_argument(
        "--scale-invariant",
        action="store_true",
        default=None,
        help="SIBERT's scale-invariant architecture (softmax layers become si_attention); "
        "train it with --optimizer sgd_si",
    )
    g.add_argument(
        "--no-shortcuts",
        dest="shortcuts",
        action="store_false",
        default=None,
        help="drop the residual connections (vanilla transformer; with --norm none --mixer espa "
        "--ffn tat: He et al. 2023's E-SPA recipe)",
    )


def register(sub) -> None:
    p = sub.add_parser("train", help="train a mixer on a task", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, help="task name (see `longseq list --tasks`)")
    p.add_argument(
        "--mixer",
        help="mixer name (every layer), or a stack with one entry per layer, each NAME, NAME(KEY=VALUE,...) "
        "and optionally *N to repeat it: 's4d(d_state=64)*3,softmax(rope=true)'; "
        "default softmax, or the --model-preset's stack",
    )
    p.add_argument(
        "--model",
        choices=["mixer", "hmm"],
        default="mixer",
        help="mixer: a CausalLM / SequenceClassifier of --mixer layers (default); hmm: a neural HMM "
        "language model (longseq.structured; LM tasks only), configured with --model-option",
    )
    p.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="--model hmm option (repeatable): num_states, rank (omit for full rank), "
        "feature_map=exp|softmax_kernel, emb_dim, init_std (embedding init; null = Xavier), "
        "learn_projection (true: train the feature projection, the official setting)",
    )
    p.add_argument("--preset", default="quick", help="task preset (quick, lra, ...)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task setting override (repeatable)")
    p.add_argument("--out", help="run directory (default runs/TASK-MIXER)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt; the settings must equal the run's (OUT/config.json)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT")
    p.add_argument(
        "--allow-change",
        metavar="SETTING[,SETTING]",
        help="with --resume: trainer settings that may differ from the run's: steps, eval_every, "
        "log_every, checkpoint_every, eval_batch_size, eval_max_batches",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds data generation, initialisation and batch order")
    t = p.add_argument_group("trainer (defaults come from the task preset)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup", type=int)
    t.add_argument("--grad-clip", type=float)
    t.add_argument("--grad-accum", type=int)
    t.add_argument(
        "--optimizer",
        choices=["adamw", "sgd", "sgd_si"],
        help="adamw (default); sgd: plain SGD + weight decay; sgd_si: SIBERT's SGD + weight decay with "
        "the gradient norm clipped at SI_CLIP * sqrt(2 wd / lr) * ||W||",
    )
    t.add_argument("--si-clip", type=float, help="sgd_si clipping factor C (default 2; 0 disables clipping)")
    t.add_argument("--eval-every", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--device", default="auto")
    t.add_argument("--no-progress", action="store_true")
    d = p.add_argument_group("several processes (launch with: torchrun --nproc-per-node N -m longseq train ...)")
    d.add_argument(
        "--fsdp",
        action="store_true",
        help="shard parameters, gradients and optimizer state (FSDP) instead of replicating them (DDP)",
    )
    d.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        help="seconds a process waits for its peers in a collective before failing",
    )
    f = p.add_argument_group("fine-tuning a pre-trained encoder (longseq.train.finetune)")
    f.add_argument(
        "--init-from",
        metavar="RUN_OR_MODEL_DIR",
        help="start a classifier from the encoder of a saved MaskedLM (a run dir or its model/ dir); "
        "the architecture comes from it; prints and saves (OUT/init_report.json) every tensor "
        "loaded, skipped or newly initialised",
    )
    f.add_argument(
        "--layer-lr-decay",
        type=float,
        metavar="DECAY",
        help="with --init-from: lr x DECAY^depth from the top (head 1, last block DECAY, ..., embeddings "
        "DECAY^(n_layers+1))",
    )
    f.add_argument("--freeze-embeddings", action="store_true", help="with --init-from: do not train the embeddings")
    add_model_args(p)
    p.set_defaults(func=run)


_TRAIN_FLAGS = (
    "steps",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "grad_clip",
    "grad_accum",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "threads",
    "optimizer",
    "si_clip",
)


def validate_args(args, out: Path) -> None:
    """Everything the flags alone decide, checked before the task is built or a file is written."""
    from ..train.rundir import check_allow_changes, check_out_dir
    from ..train.trainer import check_settings, resolve_device

    given = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if given.get("si_clip") == 0:
        given["si_clip"] = None
    check_settings({**given, "device": args.device})
    for k in ("d_model", "n_layers", "num_heads"):
        v = getattr(args, k)
        if v is not None and v < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be a positive integer, got {v}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.allow_change and not args.resume:
        raise ValueError("--allow-change only applies with --resume")
    check_allow_changes((args.allow_change or "").split(","))
    check_out_dir(out, resume=args.resume, overwrite=args.overwrite)
    resolve_device(args.device)


def run(args) -> int:
    import torch

    from .. import tasks
    from ..train import build_model

    if args.model_config:  # the default run directory is named after the file; the printed label after the layers
        mixer, label = None, Path(args.model_config).resolve().name.removesuffix(".json")
    elif args.model == "hmm":
        mixer, label = None, "hmm"
    else:
        mixer = parse_mixer(args.mixer)
        label = _label(mixer) if isinstance(mixer, list) else mixer or args.model_preset or "softmax"
    out = Path(args.out or f"runs/{args.task}-{label.replace(',', '+')}")
    validate_args(args, out)
    if args.init_from is None and (args.layer_lr_decay is not None or args.freeze_embeddings):
        raise ValueError("--layer-lr-decay and --freeze-embeddings apply to fine-tuning: give --init-from")
    task = tasks.build(args.task, preset=args.preset, seed=args.seed, **parse_kv(args.task_option, "--task-option"))
    if args.model_config:
        return _run(args, task, *_model_from_file(args, task), out)
    if task.meta.kind == "regression" and args.mixer is None:
        label = task.model_defaults.get("operator", "fno")
    mixer_options = parse_kv(args.mixer_option, "--mixer-option") or None
    ffn_options = parse_kv(args.ffn_option, "--ffn-option") or None
    torch.manual_seed(args.seed)  # initialisation (torch's default seed differs per process)
    if args.init_from is not None:  # fine-tuning: the encoder of a saved MaskedLM, a new head
        from ._finetune import finetune_from_args

        model, init_report = finetune_from_args(args, task)
        return _run(args, task, model, label, out, init_report)
    if args.model == "hmm":
        return _run(args, task, _build_hmm(task, args), label, out)
    model = build_model(
        task,
        mixer,
        d_model=args.d_model,
        n_layers=args.n_layers,
        num_heads=args.num_heads,
        position=args.position,
        norm=args.norm,
        ffn=args.ffn,
        dropout=args.dropout,
        mixer_options=mixer_options,
        scale_invariant=args.scale_invariant,
        shortcuts=args.shortcuts,
        ffn_options=ffn_options,
        position_options=parse_kv(args.position_option, "--position-option") or None,
        embedding=args.embedding,
        embedding_options=parse_kv(args.embedding_option, "--embedding-option") or None,
        model_preset=args.model_preset,
        model_preset_options=parse_kv(args.model_preset_option, "--model-preset-option") or None,
    )
    return _run(args, task, model, label, out)


_MODEL_FLAGS = (
    "mixer",
    "d_model",
    "n_layers",
    "num_heads",
    "position",
    "position_option",
    "norm",
    "ffn",
    "ffn_option",
    "dropout",
    "mixer_option",
    "embedding",
    "embedding_option",
    "model_preset",
    "model_preset_option",
    "scale_invariant",
    "shortcuts",
)


def _label(layers) -> str:
    names = [sp.mixer for sp in layers]
    return ",".join(dict.fromkeys(names))


def _model_from_file(args, task):
    """``--model-config``: (model, label) from a ModelConfig file or a saved model directory."""
    import torch

    from ..models.config import read_model_config
    from ..train import build_model_from_config

    given = ["--" + k.replace("_", "-") for k in _MODEL_FLAGS if getattr(args, k, None) is not None]
    if given:
        raise ValueError(f"--model-config states the whole model; drop {', '.join(given)} (or edit the file)")
    torch.manual_seed(args.seed)
    model = build_model_from_config(task, read_model_config(args.model_config))
    return model, _label(model.model_config.layers)


def _run(args, task, model, label, out: Path, init_report=None) -> int:
    from ..train import TrainConfig, train

    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if overrides.get("si_clip") == 0:
        overrides["si_clip"] = None
    cfg = TrainConfig.from_dict(
        {
            **task.train_defaults,
            **overrides,
            "seed": args.seed,
            "device": args.device,
            "progress": not args.no_progress,
            "fsdp": args.fsdp,
            "dist_timeout": args.dist_timeout,
        }
    )
    cfg.validate()
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    if main:
        print(f"task {args.task} ({args.preset}), mixer {label}: {model.num_parameters():,} parameters -> {out}")
    run_config = {
        "cli": {"task": args.task, "mixer": label, "preset": args.preset},
        "task_options": parse_kv(args.task_option, "--task-option"),
    }
    if init_report is not None:
        from ._finetune import record_init

        run_config["init_from"] = record_init(init_report, out, args, main)
    final = train(
        model,
        task,
        cfg,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_changes=[c for c in (args.allow_change or "").split(",") if c.strip()],
        run_config=run_config,
    )
    metric = task.meta.metric
    for split in ("validation", "test") if main else ():
        m = final[split]
        print(f"{split}: {metric} {(m[metric] if metric in m else m['accuracy']):.4f}  loss {m['loss']:.4f}")
    return 0


def _build_hmm(task, args):
    """``--model hmm``: a neural (low-rank with ``rank=r``) HMM language model, longseq.structured."""
    from ..structured import build_hmm_lm

    if task.meta.kind != "lm":
        raise ValueError(
            f"--model hmm is a language model; task {task.meta.name!r} is {task.meta.kind!r} "
            "(use an LM task: lm_dict, lm_code, ...)"
        )
    ignored = [f for f in ("mixer", "d_model", "n_layers", "num_heads", "model_preset") if getattr(args, f) is not None]
    if ignored:
        raise ValueError(f"--model hmm takes its settings from --model-option; remove {', '.join(ignored)}")
    return build_hmm_lm(task.meta.vocab_size, parse_kv(args.model_option, "--model-option"))
