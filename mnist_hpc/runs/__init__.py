"""The run folder: where a run lives, what it writes (config, metrics, summary, plots) and how it is read back.

``read_state(run_dir)`` says how a run stands (running, completed, failed, interrupted).
"""

from mnist_hpc.runs.state import RunState, read_state

__all__ = ["RunState", "read_state"]
