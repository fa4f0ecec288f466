"""Running out of memory while reading the data (issue 27, defect 11) is reported as what ran
out, never as corrupted files to delete."""

from __future__ import annotations

import shutil

import pytest

from mnist_hpc.config.datasets import DATASETS
from mnist_hpc.errors import DataError
from mnist_hpc.training import data as datamod
from tests.cli_support import one_line


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] "
            "DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 188160000 bytes"
        ),
    ],
)
def test_a_memory_error_while_reading_data_says_what_ran_out(synth_root, tmp_path, monkeypatch, cli, error):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    before = sorted(p.name for p in (root / "MNIST" / "raw").iterdir())

    def no_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(datamod, "_read_idx", no_memory)
    with pytest.raises(DataError) as e:
        datamod.read_split(DATASETS["mnist"], root, True)
    text = str(e.value)
    assert "ran out of memory while reading the training set (mnist); the files are not damaged" in text
    assert "delete" not in text and "corrupt" not in text
    r = cli("data", "verify", "--data-dir", root, "--dataset", "mnist")
    assert "ran out of memory" in r.out and one_line(r) == (
        f"error: {root}: ran out of memory checking 1 dataset(s), so their files were not judged (nothing "
        f"to delete): free memory and run `mnist-hpc data verify` again"
    )
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == before  # nothing was deleted
