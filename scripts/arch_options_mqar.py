"""Quick-MQAR test accuracy and parameter count per architecture option, at the task preset
(2 layers, d64, 2 heads, 2,000 steps of batch 64, lr 2e-3), seed 0, one thread:

    python scripts/arch_options_mqar.py "+deberta"        # one configuration per call (1-10 min)

Prints one JSON line. Configurations: the keys of ``C`` below (the README's architecture options)."""
import json
import sys
import time
import torch
torch.set_num_threads(1)
from longseq import tasks
from longseq.train import TrainConfig, build_model, train
C = {
    "softmax (learned pos)": {},
    "+deberta": {"position": "deberta"},
    "+diet_abs": {"position": "diet_abs"},
    "+diet_rel": {"position": "diet_rel"},
    "moe (4 experts)": {"ffn": "moe", "ffn_options": {"num_experts": 4}},
    "butterfly FFN": {"ffn_options": {"linear": "butterfly", "block": 4, "rank": 8}},
    "tensor_chain FFN+qkv": {"ffn_options": {"linear": "tensor_chain", "ratio": 0.005},
                             "mixer_options": {"proj": "tensor_chain", "proj_options": {"ratio": 0.07}, "proj_out": False}},
    "spade preset": {"mixer": None, "model_preset": "spade"},
    "h3_hybrid preset": {"mixer": None, "model_preset": "h3_hybrid"},
}
name = sys.argv[1]
kw = dict(C[name]); mixer = kw.pop("mixer", "softmax")
task = tasks.build("mqar", preset="quick", seed=0)
torch.manual_seed(0)
model = build_model(task, mixer, **kw)
cfg = TrainConfig.from_dict({**task.train_defaults, "seed": 0, "progress": False, "eval_every": 500})
t = time.time()
f = train(model, task, cfg, f"runs/arch-options/{''.join(ch if ch.isalnum() else '_' for ch in name)}")
print(json.dumps({"config": name, "params": model.num_parameters(), "test": f["test"]["accuracy"],
                  "val": f["validation"]["accuracy"], "seconds": round(time.time() - t)}), flush=True)
