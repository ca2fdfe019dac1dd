#!/usr/bin/env bash
# Every benchmark in one go, from the repository root, each one's tables on stdout under a
# header naming the command (so a log says what printed what). A bench that fails does not
# stop the rest; the exit status says whether any failed.
#
#   bash bench/run_all.sh            # the full runs: an hour or more on 2 busy cores
#   bash bench/run_all.sh --quick    # small settings of the same benches: a few minutes
#
# --quick times fewer pairs for shorter windows: its ratios have wider spreads, enough to
# see that every bench runs and roughly where its figures stand, not to quote them.
set -u
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  -h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "unknown option: $1 (use --quick, --help or nothing)" >&2
    exit 2
    ;;
esac

if [ "$quick" = 1 ]; then
  benches=(
    "bench/bench_explain.py --models resnet50 --runtimes onnxruntime --targets portable --least 2 --no-captum"
    "bench/bench_methods.py --rows vanilla gradcam --repeats 3 --least 2 --budget 5"
    "bench/bench_batch_cost.py --sizes 16 --repeats 3 --least 2 --budget 10"
    "bench/profile_batch.py --batch 8 --runs 1 --top 8"
    "bench/bench_grpc.py --skip-resnet --repeats 5 --seconds 2 --windows 1"
  )
else
  benches=(
    "bench/bench_explain.py"
    "bench/bench_methods.py"
    "bench/bench_batch_cost.py"
    "bench/profile_batch.py --forward"
    "bench/bench_grpc.py"
    "bench/bench_spinning.py"
    "bench/bench_load.py"
    "bench/quantized_maps.py"
    "bench/rectifier_default.py"
    "bench/model_coverage.py --markdown"
  )
fi

failed=()
for bench in "${benches[@]}"; do
  echo "=== python $bench"
  # shellcheck disable=SC2086  # each entry is a command line, split on purpose
  if ! python $bench; then
    failed+=("$bench")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
