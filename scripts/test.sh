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

# Tools some tests need, from Debian's packages when missing (as root, with apt-get): without
# them those tests skip, and fail in CI.
apt_install() {  # PACKAGE COMMAND WHAT
    if command -v "$2" >/dev/null || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        return 0
    fi
    echo "test: installing $1 (apt-get) for $3" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$1" >/dev/null; }; then
        echo "test: $1 could not be installed: $3 skip (fail in CI)" >&2
    fi
}

# The shared-queue tests run slurm-hog as other Unix users, who cannot reach an interpreter under
# /root: they run the system's Python of this version (with .venv's packages on PYTHONPATH).
version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
apt_install "python$version" "/usr/bin/python$version" "the shared-queue tests"
apt_install chromium chromium "the report page's browser tests"
apt_install tmux tmux "the live view's tests"
apt_install make make "the make tests"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers: most tests wait on processes they started, so two share two cores well (a file's
# tests on one worker; the SLURM tests take turns: tests/conftest.py). `scripts/test.sh -n 0 ...`
# runs in one process.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
