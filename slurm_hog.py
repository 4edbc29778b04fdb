#!/usr/bin/env python3
"""Entry point kept at the top level so `./slurm_hog.py ...` works from a checkout.

Run by a Python without slurm-hog's packages (the usual case for `./slurm_hog.py` in a clone),
it runs itself again with the clone's .venv when scripts/install.sh has made one.
"""

import os
import sys

try:
    from hog.cli.group import main
except ModuleNotFoundError as error:
    here = os.path.dirname(os.path.realpath(__file__))
    venv_python = os.path.join(here, ".venv", "bin", "python")
    if os.path.isfile(venv_python) and os.path.realpath(sys.prefix) != os.path.join(here, ".venv"):
        os.execv(venv_python, [venv_python, os.path.realpath(__file__), *sys.argv[1:]])
    sys.exit(
        f"slurm_hog.py: this Python ({sys.executable}) lacks the package {error.name!r}: "
        f"run {os.path.join(here, 'scripts', 'install.sh')} once, then ./slurm_hog.py again"
    )

if __name__ == "__main__":
    main()
