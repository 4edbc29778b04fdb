#!/usr/bin/env python3
"""Entry point kept at the top level so `./slurm_hog.py ...` works from a checkout."""

from hog.cli.group import main

if __name__ == "__main__":
    main()
