"""Child process of the fault-injection tests (tests/test_run_integrity.py): ``python fault_child.py
ARGS...`` runs ``longseq ARGS...`` with faults taken from the environment:

* ``FAULT_STEP_DELAY=S``: sleep S seconds per training micro-step (so that a kill lands mid-run);
* ``FAULT_HANG_AT_CHECKPOINT=N``: when the step-N checkpoint is written, write half of its bytes to
  the temp file, create ``FAULT_MARKER`` and hang (the parent then kills -9 in the middle of the write).

Neither changes what is computed: the delay sleeps, the hang never returns."""

import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from longseq.cli import main  # noqa: E402
from longseq.train import rundir, trainer  # noqa: E402

delay = float(os.environ.get("FAULT_STEP_DELAY", "0"))
if delay:
    real_aux = trainer._aux_loss

    def slow_aux(model):
        time.sleep(delay)
        return real_aux(model)

    trainer._aux_loss = slow_aux

hang_at = int(os.environ.get("FAULT_HANG_AT_CHECKPOINT", "0"))
if hang_at:
    real_dump = rundir._dump

    def hanging_dump(obj, tmp):
        if obj.get("step") != hang_at:
            return real_dump(obj, tmp)
        real_dump(obj, tmp)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[: len(data) // 2])
        Path(os.environ["FAULT_MARKER"]).write_text(tmp)
        time.sleep(600)

    rundir._dump = hanging_dump

sys.exit(main(sys.argv[1:]))
