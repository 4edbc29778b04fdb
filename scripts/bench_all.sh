#!/usr/bin/env bash
# Runs every benchmark in turn, then prints one summary table for the README.
#   scripts/bench_all.sh            full sizes (about 15-20 minutes on a quiet 2-core machine)
#   scripts/bench_all.sh --quick    small sizes: a smoke check of every script
# Results: bench-results/NAME.json (--quick: NAME.quick.json), git-ignored. bench_slurm.py skips itself without a local cluster
# (scripts/slurm-cluster.sh start). A failing benchmark is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[[ -x $python ]] || { echo "bench_all: no .venv: run scripts/install.sh first" >&2; exit 1; }

failed=()
for name in startup submit queue_size throughput lock workflows report executor slurm make; do
  echo
  echo "=== bench_$name $* ($(date +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg)) ==="
  if ! "$python" "scripts/bench_$name.py" "$@"; then
    failed+=("$name")
    # No stale figures in the summary.
    rm -f "bench-results/$name.json" "bench-results/$name.quick.json"
  fi
done

echo
echo "=== summary (bench-results/*.json; scripts/bench_summary.py --md for Markdown) ==="
quick=()
[[ " $* " == *" --quick "* ]] && quick=(--quick)
"$python" scripts/bench_summary.py "${quick[@]}"
if ((${#failed[@]})); then
  echo "bench_all: failed: ${failed[*]}" >&2
  exit 1
fi
