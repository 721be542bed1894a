#!/usr/bin/env bash
# The reduced pre-train/fine-tune comparison behind the README's numbers (issue 22), run on the
# shared 2-core CPU one mixer and one seed at a time (each invocation < 10 minutes):
# MLM on mlm_code (quick: 256-byte windows) for PRE steps (default 100), then retrieval (quick,
# 256-byte chunks; 100 validation / 500 test pairs) fine-tuned for FT steps (default 50) vs from
# scratch for PRE + FT, batch 16. An invocation cut by the 600-second limit is continued by
# re-running the script (--resume: finished stages are skipped, others continue from checkpoints).
# Usage: [PRE=100 FT=50] scripts/pretrain_finetune_reduced.sh OUT [MIXERS] [SEEDS]
set -euo pipefail
OUT=${1:-runs/pf_reduced}
MIXERS=${2:-softmax,deberta,linformer,bigbird,grn,s4d}
SEEDS=${3:-0,1}
PY=${PY:-python}
PRE=${PRE:-100}
FT=${FT:-50}
mkdir -p "$OUT"
for seed in ${SEEDS//,/ }; do
  for m in ${MIXERS//,/ }; do
    OMP_NUM_THREADS=1 timeout 600 $PY -m longseq arena --protocol pretrain-finetune --mixers "$m" --tasks retrieval \
      --pretrain-task mlm_code --pretrain-steps "$PRE" --finetune-steps "$FT" --resume --seeds "$seed" --threads 1 \
      --task-option mlm_code.max_eval_bytes=16384 --task-option retrieval.n_val=100 \
      --task-option retrieval.n_test=500 --train-option batch_size=16 \
      --out "$OUT/$m-s$seed" > "$OUT.$m-s$seed.log" 2>&1 || echo "$m seed $seed: rc=$?"
  done
done
