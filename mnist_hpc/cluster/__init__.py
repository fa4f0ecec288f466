"""Slurm clusters: the job's environment (env, the only reader of SLURM_*), cluster profiles,
job specs and their rules, rendering from templates, submitting (jobs), following (queue),
copying the project up (push) and the data archive (datapack)."""
