#!/bin/bash
# Same-run A/B of decode ms/token between two source trees (issue 25), fresh process per run,
# alternating base/new for each (context, mixer), 3 rounds; one line per run:
#   round tree mixer context step_ms floor_ms n_linear
# usage: scripts/decode_step_ab.sh /tmp/decode-base /tmp/decode-new > ab.txt
base=$1; new=$2; here=$(cd "$(dirname "$0")" && pwd)
for r in 1 2 3; do
  for c in 1024 16384; do
    for m in linear s5 s4d h3 performer local softmax; do
      for v in base new; do
        tree=$base; [ "$v" = new ] && tree=$new
        echo -n "$r $v "
        PYTHONPATH=$tree/src OMP_NUM_THREADS=1 python "$here/decode_step_time.py" $m $c 100
      done
    done
  done
done
