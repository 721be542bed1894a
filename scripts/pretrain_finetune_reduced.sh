#!/usr/bin/env bash
# The reduced pre-train/fine-tune comparison behind the README's numbers (issue 22), run on the
# shared 2-core CPU one mixer and one seed at a time (each invocation < 10 minutes):
# MLM on mlm_code (quick: 256-byte windows) for 200 steps, then retrieval (quick, 256-byte
# chunks; 200 validation / 1,000 test pairs) fine-tuned for 100 steps vs from scratch for 300.
# Usage: scripts/pretrain_finetune_reduced.sh OUT [MIXERS] [SEEDS]
set -euo pipefail
OUT=${1:-runs/pf_reduced}
MIXERS=${2:-softmax,deberta,linformer,bigbird,grn,s4d}
SEEDS=${3:-0,1}
PY=${PY:-python}
mkdir -p "$OUT"
for seed in ${SEEDS//,/ }; do
  for m in ${MIXERS//,/ }; do
    OMP_NUM_THREADS=1 timeout 600 $PY -m longseq arena --protocol pretrain-finetune --mixers "$m" --tasks retrieval \
      --pretrain-task mlm_code --pretrain-steps 200 --finetune-steps 100 --seeds "$seed" --threads 1 \
      --task-option mlm_code.max_eval_bytes=32768 --task-option retrieval.n_val=200 \
      --task-option retrieval.n_test=1000 --train-option batch_size=16 \
      --out "$OUT/$m-s$seed" > "$OUT.$m-s$seed.log" 2>&1 || echo "$m seed $seed: rc=$?"
  done
done
