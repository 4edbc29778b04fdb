"""What runs on a node: the hog's event loop, its slot processes, output files, resources,
the database thread, healing, and what SLURM tells a job."""
