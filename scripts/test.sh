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

# The shared-queue tests run slurm-hog as other Unix users, who cannot reach an interpreter under
# /root: they run the system's Python of this version (with .venv's packages on PYTHONPATH).
version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$(id -u)" = 0 ] && [ ! -x "/usr/bin/python$version" ] && command -v apt-get >/dev/null; then
    echo "test: installing python$version (apt-get) for the shared-queue tests" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "python$version" >/dev/null; }; then
        echo "test: python$version could not be installed: the shared-queue tests skip (fail in CI)" >&2
    fi
fi

# Headless Chromium opens the report's page in tests/test_report.py (Debian's package; no network).
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    echo "test: installing chromium (apt-get) for the report page's tests" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium >/dev/null; }; then
        echo "test: chromium could not be installed: the report page's browser tests skip (fail in CI)" >&2
    fi
fi

# The live view (status --watch) is tested in a real terminal: tmux sends keys and reads the screen.
if [ "$(id -u)" = 0 ] && ! command -v tmux >/dev/null && command -v apt-get >/dev/null; then
    echo "test: installing tmux (apt-get) for the live view's tests" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends tmux >/dev/null; }; then
        echo "test: tmux could not be installed: the live view's tests skip (fail in CI)" >&2
    fi
fi

# Debian's GNU make for the make-through-hogs tests (SHELL=slurm-hog-shell).
if ! command -v make >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing make (apt-get) for the make tests" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends make >/dev/null; }; then
        echo "test: make could not be installed: the make tests skip" >&2
    fi
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
