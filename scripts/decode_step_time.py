"""ms per generated token of ``CausalLM.step`` (issue 25; benchmarks/notes/2026-12-08-decode-overhead.md).

    OMP_NUM_THREADS=1 PYTHONPATH=<tree>/src python scripts/decode_step_time.py MIXER CONTEXT STEPS

Model: CausalLM, vocabulary 256, 2 layers, d_model 256, 4 heads, float32, eval mode, batch 1, one
torch thread, seed 0. A prefill of CONTEXT random tokens (``forward(..., return_state=True)``), 5
warm-up steps, then STEPS timed steps (wall clock); prints ``mixer context median_ms floor_ms
n_linear``, where the floor is the median time of the step's matmuls alone: every ``nn.Linear`` of
the model applied once to a ``[1, in]`` row (the tied head included), nothing else.
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from longseq.models.causal_lm import CausalLM

torch.set_num_threads(1)

mixer, ctx, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
m = CausalLM(256, 256, 2, mixer=mixer, num_heads=4).eval()
with torch.no_grad():
    logits, state = m(torch.randint(0, 256, (1, ctx)), return_state=True)
    tok = logits[:, -1].argmax(-1)
    for _ in range(5):
        logits, state = m.step(tok, state)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        logits, state = m.step(tok, state)
        ts.append(time.perf_counter() - t0)
    # floor: the step's matmuls alone (every nn.Linear once on a [1, in] row, plus the tied head)
    lins = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    rows = [torch.randn(1, mod.in_features) for mod in lins]
    head = m.backbone.embed.weight
    hrow = torch.randn(1, head.shape[1])
    fl = []
    for _ in range(n):
        t0 = time.perf_counter()
        for mod, r in zip(lins, rows):
            F.linear(r, mod.weight, mod.bias)
        if not any(mod.weight is head for mod in lins):
            F.linear(hrow, head)
        fl.append(time.perf_counter() - t0)
print(f"{mixer} {ctx} {statistics.median(ts) * 1e3:.3f} {statistics.median(fl) * 1e3:.3f} {len(lins)}")
