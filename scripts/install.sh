#!/usr/bin/env bash
# Installs slurm-hog and its test tools into .venv (idempotent). Usage: scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "install: slurm-hog needs Python 3.10 or newer as \$PYTHON or python3" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    # The real interpreter, not a shell wrapper (pyenv's shims add ~100 ms per start).
    real=$("$python" -c 'import sys; print(sys.executable)')
    "$real" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# The build backend's notes about editable installs are for packagers, not for users.
# compat: the source folder goes on sys.path through a .pth file. The default import hook
# costs every start ~10 ms (pathlib, urllib and re at interpreter start), make's SHELL included.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e '.[test]'
# The slow filesystem of the tests and benchmarks (scripts/slowfs.py): a libfuse3 server in C.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v fusermount3 && command -v cc && pkg-config --exists fuse3; } >/dev/null 2>&1; then
    echo "install: installing fuse3, libfuse3-dev and a C compiler (apt-get) for the slow-filesystem tests" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        fuse3 libfuse3-dev pkg-config gcc libc6-dev >/dev/null; } \
        || echo "install: fuse3 could not be installed: the slow-filesystem tests skip" >&2
fi
if [ "$(id -u)" = 0 ] && pkg-config --exists fuse3 2>/dev/null; then
    .venv/bin/python scripts/slowfs.py build >/dev/null \
        || echo "install: the slow filesystem's server did not build: the slow-filesystem tests skip" >&2
fi
# Byte-compile now: start-up time matters for every `slurm-hog` call, and some environments
# forbid writing .pyc files at run time.
.venv/bin/python -m compileall -q hog slurm_hog.py scripts tests >/dev/null
echo "installed: .venv/bin/slurm-hog ($(.venv/bin/python --version))"
