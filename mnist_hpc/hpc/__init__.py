"""Cluster support: profiles (data), job-script rendering (pure), Slurm calls (argv lists)
and the cluster commands. Never imports torch."""
