#!/usr/bin/env bash
# Run (or resume) the shipped design-space studies and copy their tables and plots into docs/studies/.
#
#   experiments/run_studies.sh                         # every study, in the order below
#   experiments/run_studies.sh 06_bypass 07_sr_sweep   # some of them (file names without .yaml)
#   WORKERS=2 experiments/run_studies.sh 01_baselines_cifar10
#
# Each study trains in runs/studies/<name> (interrupt at any time: the same command resumes), then its
# results.csv, results.md and PNG plots are copied to docs/studies/<name>/ for docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SQUEEZELAB=${SQUEEZELAB:-.venv/bin/squeezelab}
WORKERS=${WORKERS:-1}
ALL="06_bypass 07_sr_sweep 07_pct3x3_sweep 03_batchnorm 04_fire_removal 05_fire_pairing 02_augmentation
     08_squeezenext 10_bf16_autocast 01_baselines_mnist 01_baselines_cifar10"

for study in ${@:-$ALL}; do
  file=experiments/studies/$study.yaml
  [ -f "$file" ] || { echo "no study file $file" >&2; exit 2; }
  out=runs/studies/$study
  "$SQUEEZELAB" sweep "$file" --out "$out" --workers "$WORKERS" --quiet
  mkdir -p "docs/studies/$study"
  cp "$out"/results.csv "$out"/results.md "$out"/*.png "docs/studies/$study/"
done
