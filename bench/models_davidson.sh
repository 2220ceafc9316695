#!/usr/bin/env bash
# Reproduces the model figures in the README: the legacy lexicon, the prompt baseline, both pre-filters and the
# fine-tuned model, each trained on the same split of the Davidson data (seed 0), then compared side by side
# on the same held-out test split. Usage (from the repo root, after `make install`):
#   PATH=.venv/bin:$PATH bash bench/models_davidson.sh [OUT_DIR] [extra `finesieve train` flags...]
# e.g. bash bench/models_davidson.sh runs/davidson --method full
set -euo pipefail
DATA_DIR=${FINESIEVE_DATA:-../shared/data}
D=$DATA_DIR/davidson_hate_offensive/davidson_hate_offensive.csv
OUT=${1:-runs/davidson}
shift || true
P="--positive hate_speech"
[ -d "$OUT/legacy" ] || finesieve fit rules:builtin:hate_speech --data "$D" $P --out "$OUT/legacy"
[ -d "$OUT/baseline" ] || finesieve baseline --data "$D" $P --out "$OUT/baseline"
[ -d "$OUT/tfidf" ] || finesieve prefilter train --kind tfidf --data "$D" $P --out "$OUT/tfidf"
[ -d "$OUT/char_cnn" ] || finesieve prefilter train --data "$D" $P --out "$OUT/char_cnn"
[ -f "$OUT/finetuned/manifest.json" ] || finesieve train --data "$D" --text-col text --label-col label $P --out "$OUT/finetuned" "$@"
finesieve eval "$OUT/legacy" "$OUT/baseline" "$OUT/tfidf" "$OUT/char_cnn" "$OUT/finetuned" --data "$D" $P \
  --report "$OUT/report.html"
