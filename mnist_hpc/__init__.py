"""mnist-hpc: train MNIST-family classifiers from YAML configs, on a laptop or a Slurm cluster.

The public API (see docs/api.md), imported lazily so that `import mnist_hpc` loads no torch:

    import mnist_hpc
    run = mnist_hpc.train("quickstart")            # -> Run
    run.summary.test_accuracy, run.plots, run.predict(["digit.png"])
    mnist_hpc.predict("model.onnx", ["digit.png"])  # a run folder, checkpoint or exported file
    mnist_hpc.submit("quickstart", cluster="narval", account="def-you", dry_run=True).script
"""

from mnist_hpc.clock import PROCESS_START  # noqa: F401  (the process's start; mnist_hpc.clock)

__version__ = "0.2.0"

_API = (
    "load_config",
    "train",
    "Run",
    "Prediction",
    "predict",
    "export",
    "evaluate",
    "Evaluation",
    "sweep",
    "SweepResult",
    "sweep_plan",
    "sweep_status",
    "sweep_report",
    "report",
    "list_runs",
    "RunList",
    "sync",
    "submit",
    # the cluster commands (api_cluster.py)
    "sweep_submit",
    "estimate",
    "jobs_status",
    "watch_jobs_status",
    "log_file",
    "follow_log",
    "cancel",
    "preempt",
    "setup_cluster",
    "push",
    "pack_data",
    "DataPack",
    "STATUS_EVERY",
    "MAX_SWEEP_RUNS",
    "run_array_task",
    "write_array_report",
    # before training: configs, models, datasets (api_setup.py)
    "list_configs",
    "config_keys",
    "config_model",
    "list_clusters",
    "check_config",
    "ConfigCheck",
    "list_models",
    "download_weights",
    "model_summary",
    "list_datasets",
    "prepare_data",
    "verify_data",
    "DataCheck",
)
__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        from mnist_hpc import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnist_hpc' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
