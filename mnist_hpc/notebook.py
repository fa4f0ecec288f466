"""The notebook face (Jupyter, Colab, a cluster's JupyterHub): one call that readies a session.

``setup()`` makes the package's user errors print as one line (``error: ...``) instead of a
traceback, finds or fetches the datasets (``$MNIST_HPC_DATA_DIR``, the user cache, or a download
where there is internet) and says which device training will use. Everything else a notebook
needs is the public API (``mnist_hpc.train``, ``Run.show()``, ``mnist_hpc.sweep``, ...).
"""

from __future__ import annotations

from mnist_hpc.errors import UserError


def _one_line_errors() -> bool:
    """In IPython, show a UserError as ``error: message`` (the CLI's form); True if installed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False

    def show(shell, etype, value, tb, tb_offset=None):
        print(f"error: {value}")
        return None

    shell.set_custom_exc((UserError,), show)
    return True


def device_text() -> str:
    """The device ``runtime.device: auto`` picks here, in words."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def setup(datasets=("mnist",), data_dir=None, quiet: bool = False) -> str:
    """Ready a notebook session; returns the data folder.

    Raises ``DataError`` (shown as one line) when a dataset is neither on disk nor downloadable."""
    from mnist_hpc.config.datasets import DATASETS, resolve_data_root
    from mnist_hpc.training.data import prepare_all

    _one_line_errors()
    if isinstance(datasets, str):
        datasets = (datasets,)  # one name, never its letters
    unknown = [n for n in datasets if n not in DATASETS]
    if unknown:
        raise UserError(f"unknown dataset {unknown[0]!r}; expected one of {', '.join(DATASETS)}")
    root, why = resolve_data_root(data_dir)
    for name, folder, _ in prepare_all(datasets, root, download=True):
        if not quiet:
            print(f"data: {name} ready in {folder} ({why})")
    if not quiet:
        print(f"device: {device_text()}")
    return root
