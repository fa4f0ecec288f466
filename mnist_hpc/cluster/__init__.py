"""Slurm clusters: the job's environment, cluster profiles, job-script rendering, submit/status/logs/cancel."""
