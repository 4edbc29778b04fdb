"""slurm-hog: a pilot-job queue for HPC clusters on one sqlite file."""

__version__ = "0.1.0"
