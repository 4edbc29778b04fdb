#!/usr/bin/env bash
# Installs slurm-hog and runs an example workload end to end on this machine: a queue file,
# a mix of tasks, and two local hogs kept going by the monitor. Usage: scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
hog=$PWD/.venv/bin/slurm-hog

work=${EXAMPLE_DIR:-$(mktemp -d -t slurm-hog-example.XXXXXX)}
mkdir -p "$work" && cd "$work"
export SLURM_HOG_DB=$work/queue.sqlite
rm -f "$SLURM_HOG_DB"*
echo "== example in $work"
"$hog" init

# 200 short tasks from a file, one per line.
for i in $(seq 200); do echo "echo task $i; sleep 0.0\$((RANDOM % 5))"; done > tasks.txt
"$hog" submit --file tasks.txt --name short
# A task that fails, and one that fails twice before it succeeds (two retries).
"$hog" submit --name failing 'echo "no input file" >&2; exit 2'
"$hog" submit --name flaky --retries 2 'n=$(cat flaky.count 2>/dev/null || echo 0); echo $((n+1)) > flaky.count; [ $n -ge 2 ]'
# A two-core task, pinned to its own cores, and one that exceeds its time limit.
"$hog" submit --name wide -c 2 'echo "cores $HOG_CPUS, OMP_NUM_THREADS=$OMP_NUM_THREADS"'
"$hog" submit --name slow -t 2s 'sleep 60'
# Exact arguments, no shell: the space stays inside one argument.
"$hog" submit --name exact -- printf '[%s]\n' 'two words'

"$hog" status
echo "== monitor: up to 2 local hogs (nohup), until the queue is empty"
"$hog" monitor --command-prefix nohup --hogs 2 --once --poll 1s --idle-timeout 2s --heartbeat 2s
"$hog" wait --quiet || true
"$hog" status
"$hog" show --state failed --state timeout
echo "== why the failing task failed:"
"$hog" check "$("$hog" show --name failing --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
echo "== output of the exact-arguments task:"
"$hog" log "$("$hog" show --name exact --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
"$hog" show -H

# The example checks its own outcome, so it can fail loudly.
counts=$("$hog" status --json)
python3 - "$counts" <<'PY'
import json, sys
tasks = json.loads(sys.argv[1])["tasks"]
expected = {"done": 203, "failed": 1, "timeout": 1, "waiting": 0, "running": 0}
wrong = {state: (tasks[state], n) for state, n in expected.items() if tasks[state] != n}
if wrong:
    sys.exit(f"example: unexpected counts (got, wanted): {wrong}")
print("example: all as expected: 203 done, 1 failed, 1 timed out")
PY
