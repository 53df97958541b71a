#!/usr/bin/env bash
# The MNIST-1D runs behind the README's result tables (CPU, a few minutes each).
#   bash docs/results/run_mnist1d.sh OUT     # then: .venv/bin/python docs/results/collect.py OUT
set -euo pipefail
OUT=${1:-repro-runs}
D=".venv/bin/python -m distill.cli"
$D train mnist1d-mlp --out "$OUT" --quiet
$D train mnist1d-cnn "seeds=[0,1,2,3,4]" --out "$OUT" --quiet
$D train mnist1d-kd --out "$OUT" --quiet
$D bornagain ban-mnist1d --out "$OUT" --quiet
$D ensemble ensemble-mnist1d "seeds=[0,1,2,3,4]" --out "$OUT" --quiet
$D tune tune-mnist1d-kd "seeds=[0,1,2,3,4]" --out "$OUT" --quiet
nice -n 10 $D tune methods-mnist1d --out "$OUT" --quiet
