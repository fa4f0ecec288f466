"""mnist-hpc: train MNIST-family classifiers from YAML configs, on a laptop or a Slurm cluster."""

import time as _time

__version__ = "0.1.0"
PROCESS_START = _time.time()  # before click/torch are imported: total_seconds then counts them
