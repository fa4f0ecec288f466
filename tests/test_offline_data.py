"""A first run without internet (issue 27, defect 21): the download error says where the tool
looked, why the download failed (the cause, not an empty RuntimeError), and how to point it at
files that exist, without talking about compute nodes on a laptop or telling `data download`
to run `data download`; a failed download leaves no empty folders; `data verify` says what is
missing and how to get it, with a non-zero exit."""

from __future__ import annotations

import urllib.error

import pytest

from mnist_hpc.config.datasets import DATASETS
from mnist_hpc.errors import DataError
from mnist_hpc.training import data as D


@pytest.fixture
def no_network(monkeypatch):
    """torchvision's download as it fails offline: the network's error inside an empty RuntimeError."""

    class Offline:
        resources = D._tv_class(DATASETS["kmnist"]).resources

        def __init__(self, root, train, download, **kw):
            try:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            except urllib.error.URLError as e:
                raise RuntimeError("") from e

    monkeypatch.setattr(D, "_tv_class", lambda spec: Offline)
    monkeypatch.delenv("MNIST_HPC_OFFLINE", raising=False)


def test_a_failed_download_says_where_it_looked_and_why(tmp_path, no_network):
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        D.prepare(DATASETS["kmnist"], root)
    text = str(e.value)
    assert f"not found in {root / 'KMNIST' / 'raw'}/" in text
    assert "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>" in text
    assert "RuntimeError: )" not in text and "compute nodes" not in text.split("(on a cluster")[0]
    assert "point --data-dir, $MNIST_HPC_DATA_DIR or data.root at a folder that holds KMNIST/raw/" in text
    assert not root.exists()  # no empty KMNIST/raw left behind


def test_data_download_does_not_tell_you_to_run_itself(tmp_path, no_network, cli):
    r = cli("data", "download", "--dataset", "kmnist", "--data-dir", tmp_path / "d")
    assert r.code == 1 and r.err.count("\n") == 1, r
    assert "mnist-hpc data download" not in r.err and "check the internet connection" in r.err


def test_a_failed_download_keeps_what_was_there(tmp_path, no_network):
    raw = tmp_path / "data" / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        D.prepare(DATASETS["kmnist"], tmp_path / "data")
    assert (raw / "notes.txt").read_text() == "mine"


def test_verify_says_what_is_missing_and_how_to_get_it(tmp_path, cli):
    r = cli("data", "verify", "--data-dir", tmp_path)
    assert r.code == 1
    line = r.err.strip()
    assert "\n" not in line and "fashion-mnist, mnist missing" in line
    assert "mnist-hpc data download --dataset fashion-mnist --dataset mnist" in line
    assert "delete" not in line
