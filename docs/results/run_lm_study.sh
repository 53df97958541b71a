#!/usr/bin/env bash
# The "Where KD helps" study of docs/lm.md (issue #25): lm-pydoc-study's grid, 3 seeds, on CPU,
# two chains of runs side by side (at most 2 runs at once, one torch thread each).
#   bash docs/results/run_lm_study.sh OUT [KEY=VALUE ...]   # overrides go to every run, last
#   .venv/bin/python docs/results/collect.py --lm-study OUT  # then: docs/results/lm-pydoc-study.{csv,json}
# Every run's folder is OUT/<cell>/lm-pydoc-study/<id>; collect.py reads them by cell name.
#   teacher-weak, teacher-strong   the 4-block GPT from labels, 4 or 15 epochs (model-s<seed>)
#   labels-w32, labels-w64         the 2-block students of width 32 / 64 from labels
#   kd-{weak,strong}-w{32,64}      the same students with kd from that teacher (distill.teacher=run)
#   teacher-data, kd-data-w{32,64}  a teacher trained 6 epochs on all 2,053 training blocks of the 30
#                                  documents (dataset.train_subset=null), and kd students from it (the same
#                                  documents, so distill.teacher_other_split=true: the teacher saw more training
#                                  blocks than the student, never a validation or test document)
#   gkd-strong-w32, gkd0-strong-w32  gkd at lambda = 0.5 (on-policy) and at lambda = 0 (the same
#                                  generalised JSD on the data only), from the strong teacher
set -euo pipefail
OUT=${1:-repro-runs/lm-study}
shift || true
PY=${PY:-.venv/bin/python}
D="$PY -m distill.cli"
EXTRA=("$@")  # after each cell's own overrides, so they win (a quick run: train.epochs=1 ...)
TEACHER="model={name: gpt, width: 128, depth: 4, kwargs: {heads: 4}}"
run() {  # run CELL OVERRIDES...: one distill train of lm-pydoc-study into OUT/CELL
  local cell=$1; shift
  $D train lm-pydoc-study train.threads=1 train.device=cpu "$@" "${EXTRA[@]}" --out "$OUT/$cell" --quiet \
    > "$OUT/$cell.log" 2>&1 || { echo "run_lm_study: $cell failed, see $OUT/$cell.log" >&2; return 1; }
}
dir() { ls -d "$OUT/$1"/lm-pydoc-study/*/ | head -1; }
GKD=(teacher.model=null model.width=32 distill.method=gkd distill.jsd_beta=0.5 distill.gkd_length=16
     distill.gkd_temperature=1.0)
mkdir -p "$OUT"
rm -f "$OUT/teacher-strong.done" "$OUT/teacher-strong.failed"
chain_strong() {
  run teacher-strong teacher.model=null "$TEACHER" train.epochs=15 || { touch "$OUT/teacher-strong.failed"; return 1; }
  touch "$OUT/teacher-strong.done"
  local strong; strong=$(dir teacher-strong)
  run kd-strong-w32 teacher.model=null distill.teacher="$strong" model.width=32
  run kd-strong-w64 teacher.model=null distill.teacher="$strong" model.width=64
  run gkd0-strong-w32 "${GKD[@]}" distill.teacher="$strong" distill.gkd_lambda=0
  run teacher-data teacher.model=null "$TEACHER" train.epochs=6 dataset.train_subset=null
  local data; data=$(dir teacher-data)
  run kd-data-w32 teacher.model=null distill.teacher="$data" distill.teacher_other_split=true model.width=32
  run kd-data-w64 teacher.model=null distill.teacher="$data" distill.teacher_other_split=true model.width=64
}
chain_weak() {
  run teacher-weak teacher.model=null "$TEACHER" train.epochs=4
  local weak; weak=$(dir teacher-weak)
  run labels-w32 teacher.model=null model.width=32
  run labels-w64 teacher.model=null model.width=64
  run kd-weak-w32 teacher.model=null distill.teacher="$weak" model.width=32
  run kd-weak-w64 teacher.model=null distill.teacher="$weak" model.width=64
  until [ -e "$OUT/teacher-strong.done" ] || [ -e "$OUT/teacher-strong.failed" ]; do sleep 5; done
  [ -e "$OUT/teacher-strong.done" ] || return 1
  run gkd-strong-w32 "${GKD[@]}" distill.teacher="$(dir teacher-strong)" distill.gkd_lambda=0.5
}
chain_strong & strong=$!
chain_weak & weak=$!
rc=0
wait $strong || rc=1
wait $weak || rc=1
[ $rc = 0 ] && echo "$OUT" || echo "run_lm_study: some runs failed (see the messages above)" >&2
exit $rc
