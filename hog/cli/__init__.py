"""The command line (click only): parses, calls the core, renders."""
