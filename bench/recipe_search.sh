#!/usr/bin/env bash
# The recipe search behind `finesieve train`'s defaults (issue 17): the same grid of fine-tuning settings on three
# tasks, each judged on its own validation split (plain and evaded), never on a test split. Every trial runs the
# same number of optimiser steps, so the search compares recipes at equal cost; the winner is then trained to
# convergence with `finesieve train` and evaluated on the held-out test split (bench/models_davidson.sh).
#
# Usage (from the repo root, after `make install`; ~16 trials per task, each a few minutes at 400 steps on 2 cores):
#   PATH=.venv/bin:$PATH bash bench/recipe_search.sh [OUT_DIR] [STEPS]
# Reads: OUT_DIR/{davidson,sms,resumes}/sweep.json (every trial, best first in the printed table).
# A sweep stopped part-way continues when run again (finished trials are kept). The trials finished so far are
# committed in bench/results/recipe_search_<task>.json: copy one to OUT_DIR/<task>/sweep.json to continue it.
set -euo pipefail
DATA_DIR=${FINESIEVE_DATA:-../shared/data}
OUT=${1:-runs/recipe_search}
STEPS=${2:-400}
GRID=(--grid method=lora,full --grid learning_rate=1e-4,5e-4 --grid class_weight=sqrt,none)

# Moderation: hate_speech vs the rest, with the annotators' votes as a further axis (soft labels).
finesieve sweep --data "$DATA_DIR/davidson_hate_offensive/davidson_hate_offensive.csv" --positive hate_speech \
  --vote-col hate_speech=hate_speech --vote-col offensive=offensive_language --vote-col neither=neither \
  "${GRID[@]}" --grid soft_labels=0,0.5 --max-steps "$STEPS" --out "$OUT/davidson"

# Spam: a second moderation task, short messages, clean labels.
finesieve sweep --data "$DATA_DIR/sms_spam/sms_spam.csv" --positive spam \
  "${GRID[@]}" --max-steps "$STEPS" --out "$OUT/sms"

# Resumes: 24 job families (trained as 24 classes), judged on one of them against the rest, as a screen for
# information-technology roles; long documents, of which the first 128 tokens are read (issue 18 reads past them).
finesieve sweep --data "$DATA_DIR/resumes/livecareer_resumes.csv" --text-col resume_text --label-col category \
  --id-col resume_id --positive INFORMATION-TECHNOLOGY "${GRID[@]}" --max-steps "$STEPS" --out "$OUT/resumes"
