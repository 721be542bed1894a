"""Written with the code of commit 8ea64d0 (before ModelConfig): model folders in the old config.json schema.

Run from a checkout of that commit: PYTHONPATH=src python tests/data/old_schema/write_old.py tests/data/old_schema"""

import json
import sys

import torch

from longseq.models import CausalLM, SequenceClassifier

out = sys.argv[1]
torch.manual_seed(0)
lm = CausalLM(
    20, 16, 2, mixer=[{"name": "s4d", "lr": 0.002, "d_state": 8}, "softmax"], num_heads=2, position="rope"
).eval()
clf = SequenceClassifier(20, 3, 16, 1, mixer="s5", mixer_options={"chunk": 8, "d_state": 8, "blocks": 2}).eval()
ids = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(1))
lm.save(f"{out}/lm")
clf.save(f"{out}/clf")
with torch.no_grad():
    ref = {"ids": ids.tolist(), "lm": lm(ids).tolist(), "clf": clf(ids).tolist()}
open(f"{out}/reference.json", "w").write(json.dumps(ref))
