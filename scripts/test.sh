#!/usr/bin/env bash
# Installs everything and runs the whole test suite: lint, then pytest, with a local SLURM
# cluster when this machine can run one. Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

# A real multi-node SLURM on this machine for the SLURM tests (needs root and apt, as in CI).
if [ "$(id -u)" = 0 ] && [ "${SLURM_HOG_NO_CLUSTER:-}" != 1 ]; then
    if scripts/slurm-cluster.sh start; then
        eval "$(scripts/slurm-cluster.sh env)"
    elif [ "${CI:-}" = true ]; then
        echo "test: the local SLURM cluster did not start; CI needs it" >&2
        exit 1
    fi
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
