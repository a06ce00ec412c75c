#!/usr/bin/env bash
# Accuracy recipes: train each config of experiments/train/ and compare its test top-1 with the target.
#
#   benchmarks/train_accuracy.sh                 # digits, mnist, cifar10 (MNIST takes about 15 minutes on a CPU)
#   benchmarks/train_accuracy.sh digits          # one of: digits mnist cifar10 cifar10-long
#
# Data: ../shared/data (MNIST raw IDX files, CIFAR-10 JPEG copy); set DATA_ROOT to use another folder, or
# leave it empty to let torchvision download. Runs go to $RUNS_DIR/accuracy-<name> (RUNS_DIR defaults to runs;
# point it outside the checkout to keep a long run when the checkout is replaced); an interrupted run
# continues where it stopped when the script is started again. CIFAR-10 runs the fast recipe
# (experiments/train/cifar10_fast.yaml, one process with both cores; benchmarks/cifar10_fast.py compares it
# with the airbench93 port over several seeds); cifar10-long is the earlier 78-epoch recipe under torchrun,
# one single-threaded process per core (NPROC, default 2; its batch size is per process).
set -euo pipefail
cd "$(dirname "$0")/.."
SQUEEZELAB=${SQUEEZELAB:-.venv/bin/squeezelab}
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
NPROC=${NPROC:-2}
DATA_ROOT=${DATA_ROOT-../shared/data}
RUNS_DIR=${RUNS_DIR:-runs}

run() {  # name config target [launcher ...]
  local name=$1 config=$2 target=$3 out=$RUNS_DIR/accuracy-$1
  shift 3
  local launch=("${@:-$SQUEEZELAB}")
  if [ -f "$out/last.pt" ] && [ ! -f "$out/results.json" ]; then
    "${launch[@]}" train --resume "$out"
  elif [ ! -f "$out/results.json" ]; then
    "${launch[@]}" train --config "$config" ${DATA_ROOT:+--data-root "$DATA_ROOT"} --out "$out"
  fi
  .venv/bin/python - "$out/results.json" "$name" "$target" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
test, target = results["test"], float(sys.argv[3])
tta = test.get("tta")
# with test-time augmentation the TTA figure counts, shown beside the plain one
scored = tta["top1"] if tta else test["top1"]
shown = f"test top-1 {test['top1']:.2f}%" + (f", {tta['top1']:.2f}% with TTA ({tta['mode']})" if tta else "")
print(f"{sys.argv[2]}: {results['model']} ({results['params']:,} parameters) {shown} "
      f"(target >= {target}%): {'PASS' if scored >= target else 'FAIL'}; {results['train_seconds'] / 60:.1f} min")
PY
}

for name in "${@:-digits mnist cifar10}"; do
  for one in $name; do
    case $one in
      digits) DATA_ROOT= run digits experiments/train/digits.yaml 98 ;;
      mnist) run mnist experiments/train/mnist.yaml 99.5 ;;
      cifar10) run cifar10 experiments/train/cifar10_fast.yaml 90.5 ;;
      cifar10-long) OMP_NUM_THREADS=1 run cifar10-long experiments/train/cifar10_squeezenet.yaml 90 \
                 "$TORCHRUN" --standalone --nproc_per_node="$NPROC" -m squeezelab ;;
      *) echo "unknown recipe $one (digits, mnist, cifar10, cifar10-long)" >&2; exit 2 ;;
    esac
  done
done
