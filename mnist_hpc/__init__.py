"""mnist-hpc: train MNIST-family classifiers from YAML configs, on a laptop or a Slurm cluster."""

__version__ = "0.1.0"
