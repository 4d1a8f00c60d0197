#!/usr/bin/env bash
# Checks the CUDA path end to end and prints figures: the GPU tests (tests/test_cuda.py), a short
# sweep of the embedded default model and task with one trial process per GPU, its report, the
# engine-vs-Trainer benchmark in bf16 and in fp32, and on a GPU the engine alone in fp32 against
# bf16 (benchmarks/precision.py: the figures behind what precision "auto" picks on a GPU).
#
# Usage, from anywhere: bash benchmarks/cuda_check.sh [OUTDIR]
# OUTDIR (default: a new temporary folder) receives cuda_check.log (everything printed), the study
# database, the report's tables and plots. The package runs from this checkout; torch, transformers,
# peft, optuna and the embedded model and data come from the environment (PYTHONPATH included).
# Without a GPU the same steps run on the CPU (the GPU tests skip): a dry run, best with small sizes.
#
# Sizes (environment):
#   PYTHON                 interpreter                          (python3)
#   CUDA_CHECK_TRIALS      trials of the sweep                  (4)
#   CUDA_CHECK_TRAIN       training examples per sweep trial    (2048)
#   CUDA_CHECK_EVAL        validation examples per sweep trial  (1000)
#   CUDA_CHECK_BENCH_TRAIN training examples of the benchmark   (4096)
#   CUDA_CHECK_PRECISIONS  the benchmark's precisions           ("bf16 fp32"; "fp32" on the CPU,
#                          where bf16 without native support says nothing and takes long;
#                          empty: no benchmark)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$(mktemp -d -t cuda-check.XXXXXX)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"

PYTHON="${PYTHON:-python3}"
trials="${CUDA_CHECK_TRIALS:-4}"
train="${CUDA_CHECK_TRAIN:-2048}"
eval_n="${CUDA_CHECK_EVAL:-1000}"
bench_train="${CUDA_CHECK_BENCH_TRAIN:-4096}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$root"
# Tokenized data of this check only, removed at the end.
cache="$(mktemp -d -t cuda-check-cache.XXXXXX)"
trap 'rm -rf "$cache"' EXIT
export LORAPLUS_SWEEP_CACHE="$cache"
export PYTHONUNBUFFERED=1

exec > >(tee -a "$out/cuda_check.log") 2>&1

failed=()
# One step: its command, how long it took, and on failure a note; the later steps still run.
step() {
  local name="$1" t0=$SECONDS
  shift
  echo
  echo "=== $name: $*"
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "=== $name: FAILED with exit code $? ($((SECONDS - t0)) s)"
    failed+=("$name")
  fi
}

echo "=== cuda_check $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), output in $out"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  smi=yes
else
  echo "nvidia-smi: none, or it lists no GPU"
  smi=no
fi
"$PYTHON" - <<'EOF'
import platform, os, torch, transformers, peft, optuna
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), transformers {transformers.__version__}, peft {peft.__version__}, "
      f"optuna {optuna.__version__}")
print(f"torch.cuda.is_available(): {cuda}" + (f", {torch.cuda.device_count()} device(s): "
      f"{torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}" if cuda else ""))
EOF
if "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  devices=0
  precisions="${CUDA_CHECK_PRECISIONS-bf16 fp32}"
elif [ "$smi" = yes ]; then
  echo "nvidia-smi lists a GPU but torch does not see CUDA: a CPU-only torch, or a driver too old for it" >&2
  exit 1
else
  devices=cpu
  precisions="${CUDA_CHECK_PRECISIONS-fp32}"
  echo "no GPU: a dry run on the CPU (the GPU tests skip)"
fi

gpu_tests() {
  local rc=0
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py || rc=$?
  # Without a GPU the module skips whole: pytest's "no tests collected" (5) is the expected answer.
  [ "$rc" -eq 0 ] || { [ "$devices" = cpu ] && [ "$rc" -eq 5 ]; }
}
step tests gpu_tests

db="sqlite:///$out/cuda.db"
step sweep "$PYTHON" -c 'import cli; cli.main()' run --model minilm-l6 --task rotten-tomatoes \
  --n-trials "$trials" --devices "$devices" --epochs 1 --train-limit "$train" --eval-limit "$eval_n" \
  --seed 0 --storage "$db" --study-name cuda-check --trial-timeout 600

# Every trial finished, on the device it was given: the study's stored figures, trial by trial.
trials_table() {
  "$PYTHON" - "$db" "$devices" <<'EOF'
import sys
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
db, devices = sys.argv[1:]
try:
    trials = optuna.load_study(study_name="cuda-check", storage=db).get_trials()
except KeyError:
    sys.exit("no study cuda-check stored: the sweep stored nothing")
print(f"{'#':>2} {'state':<8} {'lambda':>7} {'eta_A':>8} {'metric':>7} {'tokens/s':>9} {'peak MB':>8} "
      f"{'wall s':>7}  device")
bad = []
for t in trials:
    a = t.user_attrs
    print(f"{t.number:>2} {t.state.name:<8} {t.params.get('lambda', float('nan')):>7.3g} "
          f"{t.params.get('eta_a', float('nan')):>8.2e} {a.get('metric', float('nan')):>7.4f} "
          f"{a.get('tokens_per_s', 0):>9,.0f} {a.get('peak_memory_mb', 0):>8,.0f} "
          f"{a.get('wall_time_s', 0):>7.1f}  {a.get('device', '?')}")
    on_cpu = a.get("device") == "cpu"
    if t.state.name != "COMPLETE" or (on_cpu if devices != "cpu" else not on_cpu):
        bad.append(t.number)
if not trials or bad:
    sys.exit(f"trials not complete on the expected device: {bad or 'none stored'}")
EOF
}
step trials trials_table
step report "$PYTHON" -c 'import cli; cli.main()' report --storage "$db" --out "$out/report"

for precision in $precisions; do
  step "benchmark-$precision" "$PYTHON" benchmarks/engine_vs_trainer.py --train "$bench_train" --precision "$precision"
done
if [ "$devices" != cpu ] && [ -n "$precisions" ]; then
  step precision "$PYTHON" benchmarks/precision.py --train "$bench_train" --eval "$eval_n"
fi

echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== cuda_check: FAILED: ${failed[*]} ($SECONDS s in all; log $out/cuda_check.log)"
  exit 1
fi
echo "=== cuda_check: all steps ok ($SECONDS s in all; log $out/cuda_check.log)"
