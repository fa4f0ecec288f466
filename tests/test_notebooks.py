"""The notebooks under notebooks/: committed clean, executed top to bottom as shipped (nbclient)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.paths import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them"


def _execute(path: Path, workdir: Path, timeout: int = 600, cells: int | None = None):
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient) to run notebooks")
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if cells is not None:
        nb.cells = nb.cells[:cells]
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    return nb


def _texts(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            elif o.get("output_type") == "error":
                out.append("\n".join(o.get("traceback", [])))
            elif "text/plain" in o.get("data", {}):
                out.append(o["data"]["text/plain"])
    return "\n".join(out)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_as_shipped(path, real_root, tmp_path, monkeypatch):
    # The "your own network" cell queues a real job where a Slurm sandbox answers; the tests' own
    # sandbox (SLURM_CONF) is left to the Slurm tests, so here it shows the script (a dry run).
    monkeypatch.delenv("SLURM_CONF", raising=False)
    work = tmp_path / "notebooks"
    shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    t0 = time.time()
    nb = _execute(work / path.name, work)
    seconds = time.time() - t0
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    text = _texts(nb)
    assert pngs >= 2, f"{path.name}: {pngs} inline PNG figures"
    acc = [float(a) for a in re.findall(r"test accuracy (\d+\.\d+)%", text)]
    assert acc and acc[0] >= 98.0, f"{path.name}: test accuracy lines {acc}"
    assert seconds < 600, f"{path.name} took {seconds:.0f} s"
    if (
        path.name == "workshop.ipynb"
    ):  # the section "Your own network": a cell's class, then the same in a file
        assert re.search(r"MyNet: test accuracy \d+\.\d+% with 20,586 parameters", text), text[-2000:]
        assert "job script it would queue" in text or "submitted job" in text
    print(f"{path.name}: executed in {seconds:.0f} s, {pngs} figures, test accuracy {acc[0]:.2f}%")


@pytest.mark.notebook
def test_without_data_or_internet_the_data_cell_says_so_in_one_line(tmp_path, monkeypatch):
    path = ROOT / "notebooks" / "workshop.ipynb"
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MNIST_HPC_OFFLINE", "1")  # as good as no internet: no download is tried
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient) to run notebooks")
    with pytest.raises(nbclient.exceptions.CellExecutionError):
        _execute(path, tmp_path, timeout=120, cells=3)  # install, imports, data
    nb = __import__("nbformat").read(str(path), as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    nb.cells = nb.cells[:3]
    client.execute()
    outputs = nb.cells[2].get("outputs", [])
    lines = [ln for o in outputs if o.get("output_type") == "stream" for ln in o["text"].splitlines() if ln]
    assert lines == [ln for ln in lines if ln.startswith("error: dataset mnist not found under")], lines
    assert len(lines) == 1
    assert not any(
        o.get("output_type") == "error" and "Traceback" in "".join(o.get("traceback", [])) for o in outputs
    )
