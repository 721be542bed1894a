"""Probe (benchmarks/STRUCTURED.md): low-rank HMM N=4096 r=256 on lm_code, 100 steps, with the initial
feature projection W multiplied by argv[1]. Run: PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/hmm_projection_scale_probe.py 0.297"""
import json
import sys
import time

import torch

from longseq import tasks
from longseq.structured import HMMLanguageModel
from longseq.train import TrainConfig, train

scale = float(sys.argv[1])
task = tasks.build('lm_code', preset='quick', seed=0, seq_len=32, max_eval_bytes=16384)
torch.manual_seed(0)
m = HMMLanguageModel(256, 4096, rank=256)
with torch.no_grad():
    m.hmm.projection.mul_(scale)
cfg = TrainConfig(steps=100, batch_size=8, lr=1e-2, warmup=10, eval_every=100, log_every=20, progress=False, threads=1, seed=0)
t = time.time()
f = train(m, task, cfg, None)
print(json.dumps({"scale": scale, "val_bpb": f["validation"]["bpb"], "test_bpb": f["test"]["bpb"], "wall_s": time.time() - t}))
