"""Quick-MQAR accuracy and parameter count of the 2-layer d64 causal LM with different
feed-forward / projection options (Switch MoE, Pixelfly butterfly, Anthe tensor chain).

    python scripts/ffn_options_mqar.py CONFIG [--steps N]

CONFIG: mlp | moe | butterfly | tensor_chain. Single-threaded; one config per call (each a few
minutes on a shared CPU).

Measured (seed 0, quick preset, softmax + learned positions, d64, 2 layers, 2 heads; test
accuracy on query positions; one seed each, so differences of a few points are noise):

    config         parameters   600 steps   1200 steps
    mlp (dense)       105,728      0.273       0.330
    moe (4 experts)   304,768      0.262       0.338
    butterfly FFN      63,364      0.305       0.331
    tensor_chain       19,200      0.260       0.262
"""

from __future__ import annotations

import argparse
import time

import torch

CONFIGS = {
    "mlp": {},
    "moe": {"ffn": "moe", "ffn_options": {"num_experts": 4}},
    "butterfly": {"ffn_options": {"linear": "butterfly", "block": 4, "rank": 8}},
    # Anthe's ratios: FFN .005, q/k/v .07 (both clamp to bond 2 at d=64); W_o dense as in Anthe
    "tensor_chain": {"ffn_options": {"linear": "tensor_chain", "ratio": 0.005},
                     "mixer_options": {"proj": "tensor_chain", "proj_options": {"ratio": 0.07}, "proj_out": False}},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config", choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)

    from longseq import tasks
    from longseq.train import TrainConfig, build_model, train

    task = tasks.build("mqar", preset="quick", seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(task, "softmax", **CONFIGS[args.config])
    steps = args.steps or task.train_defaults["steps"]
    cfg = TrainConfig.from_dict({**task.train_defaults, "steps": steps, "eval_every": steps, "log_every": 100,
                                 "seed": args.seed, "progress": False, "threads": 1})
    t0 = time.perf_counter()
    final = train(model, task, cfg, None)
    print(f"{args.config}: params {model.num_parameters():,}  steps {steps}  "
          f"test accuracy {final['test']['accuracy']:.4f}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
