"""Experiments over many runs: sweeps (expand, run, resume) and comparison reports."""
