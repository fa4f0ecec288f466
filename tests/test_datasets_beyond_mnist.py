"""Datasets beyond ten classes and the user's own images: EMNIST (its splits, stored transposed),
QMNIST (int32 label rows), and `dataset: folder` (one subfolder per class, any image size); the
class count flows to the model's head, the metrics, predict and the export card."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from mnist_hpc.config.datasets import DATASETS
from tests.conftest import synthetic_split, write_idx


def write_int_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of big-endian int32 (QMNIST's label files: magic 0x0C02, N x 8)."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0C00 | array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(">i4").tobytes())


def make_emnist(root: Path, split: str, n_classes: int, offset: int = 0, n=(600, 200)) -> Path:
    """EMNIST's unpacked layout (EMNIST/raw/emnist-<split>-<train|test>-...), images stored
    transposed (column-major) as the originals are."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, count, seed in (("train", n[0], 1), ("test", n[1], 2)):
        x, y = synthetic_split(count, seed)
        y = (y.astype(np.int64) * 7) % n_classes  # more classes than ten, the same learnable images
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", x.transpose(0, 2, 1))
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", (y + offset).astype(np.uint8))
    return root


def make_qmnist(root: Path) -> Path:
    raw = root / "QMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, count, seed in (("train", 600, 1), ("test", 300, 2)):
        x, y = synthetic_split(count, seed)
        write_idx(raw / f"qmnist-{part}-images-idx3-ubyte", x)
        rows = np.zeros((count, 8), dtype=np.int64)
        rows[:, 0], rows[:, 1] = y, 1000 + np.arange(count)  # class, then NIST's writer ids etc.
        write_int_idx(raw / f"qmnist-{part}-labels-idx2-int", rows)
    return root


def test_emnist_images_are_transposed_back_and_letters_count_from_zero(tmp_path):
    from mnist_hpc.training import data

    make_emnist(tmp_path, "letters", 26, offset=1)
    spec = DATASETS["emnist-letters"]
    x, y = data.read_split(spec, tmp_path, True)
    ref, _ = synthetic_split(600, 1)
    assert (x.numpy() == ref).all()  # stored transposed, read upright
    assert int(y.min()) >= 0 and int(y.max()) <= 25 and spec.num_classes == 26


def test_qmnist_takes_the_class_column_of_its_label_rows(tmp_path):
    from mnist_hpc.training import data

    make_qmnist(tmp_path)
    x, y = data.read_split(DATASETS["qmnist"], tmp_path, False)
    assert tuple(x.shape) == (300, 28, 28) and y.ndim == 1
    assert (y.numpy() == synthetic_split(300, 2)[1]).all()


def test_a_47_class_run_has_a_47_wide_head_metrics_and_card(cli, tmp_path):
    make_emnist(tmp_path / "data", "balanced", 47)
    cfg = tmp_path / "em.yaml"
    cfg.write_text(f"""
experiment: {{name: em, output_dir: {tmp_path / "runs"}}}
data: {{dataset: emnist-balanced, batch_size: 100, eval_batch_size: 200}}
model: {{name: fast, width: 8}}
train: {{epochs: 1}}
runtime: {{threads: 1}}
""")
    r = cli("train", cfg, "--data-dir", tmp_path / "data")
    assert r.code == 0, r
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert len(s["confusion_matrix"]) == 47 and len(s["per_class"]) == 47
    assert "a" in s["per_class"] and "Z" in s["per_class"]
    # the measured normalisation is recorded: inference uses what training used
    r = cli("export", run, "--format", "state_dict")
    assert r.code == 0, r
    card = json.loads((run / "exports" / "model.state_dict.pt.card.json").read_text())
    assert len(card["classes"]) == 47 and card["output"]["shape"] == ["batch", 47]
    assert 0 < card["preprocessing"]["mean"] < 1
    r = cli("evaluate", run / "exports" / "model.state_dict.pt", "--data-dir", tmp_path / "data")
    assert r.code == 0, r


def _write_images(folder: Path, classes=("cat", "dog", "owl"), per_class=12, size=(40, 30), colour=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (*size[::-1], 3)).astype(np.uint8)
            a[:, k * 10 : (k * 10) + 8] = 250  # a class-specific bright band
            Image.fromarray(a if colour else a[..., 0]).save(folder / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_an_image_folder_trains_with_its_classes_and_names_a_bad_file(cli, tmp_path):
    images = tmp_path / "pets"
    _write_images(images)
    cfg = tmp_path / "pets.yaml"
    cfg.write_text(f"""
experiment: {{name: pets, output_dir: {tmp_path / "runs"}}}
data: {{dataset: folder, root: {images}, image_size: 32, channels: 1, val_split: 0.2, batch_size: 8, eval_batch_size: 32}}
model: {{name: fast, width: 8}}
train: {{epochs: 1}}
runtime: {{threads: 1}}
""")
    r = cli("config", "validate", cfg)
    assert r.code == 0, r
    r = cli("train", cfg, "--data-dir", tmp_path / "cache")
    assert r.code == 0, r
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert set(s["per_class"]) == {"cat", "dog", "owl"}
    assert list((tmp_path / "cache" / "folder-cache").glob("*.pt"))  # decoded once, reused
    r = cli("predict", run, images / "owl" / "3.png")
    assert r.code == 0 and ("owl" in r.out or "cat" in r.out or "dog" in r.out), r

    (images / "dog" / "broken.png").write_bytes(b"not a png")
    r = cli("train", cfg, "--data-dir", tmp_path / "cache")
    assert r.code == 1, r
    assert "could not be read" in r.err and "broken.png" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_colour_folder_and_a_missing_one(cli, tmp_path):
    images = tmp_path / "pets"
    _write_images(images, per_class=6)
    cfg = tmp_path / "pets.yaml"
    cfg.write_text(f"""
experiment: {{name: pets, output_dir: {tmp_path / "runs"}}}
data: {{dataset: folder, root: {images}, image_size: 16, channels: 3, val_split: null, batch_size: 6}}
model: {{name: cnn, channels: [4, 8], hidden: 16}}
train: {{epochs: 1}}
runtime: {{threads: 1}}
""")
    r = cli("train", cfg, "--data-dir", tmp_path / "cache")
    assert r.code == 0, r
    cfg.write_text(cfg.read_text().replace(str(images), str(tmp_path / "nowhere")))
    r = cli("train", cfg, "--data-dir", tmp_path / "cache")
    assert r.code == 1 and "not a folder" in r.err, r


def test_folder_options_are_refused_for_the_idx_datasets(cli, tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("data: {dataset: mnist, image_size: 64}\n")
    r = cli("config", "validate", cfg)
    assert r.code == 2 and "only for dataset: folder" in r.err, r


# --------------------------------------------------------------------------- the real download code, offline


@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server over a folder (the only network these tests use: 127.0.0.1)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_qmnist_downloads_and_unpacks_through_torchvision(tmp_path, file_server, monkeypatch):
    """torchvision's QMNIST download (one subset per call, .gz archives, MD5-checked), served locally."""
    import gzip

    import torchvision.datasets as tvd

    from mnist_hpc.training import data

    served, url = file_server
    src = make_qmnist(tmp_path / "src") / "QMNIST" / "raw"
    resources = {}
    for part in ("train", "test"):
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx2-int"):
            name = f"qmnist-{part}-{kind}"
            (served / f"{name}.gz").write_bytes(gzip.compress((src / name).read_bytes()))
            pair.append((f"{url}/{name}.gz", _md5(served / f"{name}.gz")))
        resources[part] = pair
    monkeypatch.setattr(tvd.QMNIST, "resources", {**resources, "nist": tvd.QMNIST.resources["nist"]})
    monkeypatch.delenv("MNIST_HPC_OFFLINE", raising=False)
    root = tmp_path / "data"
    data.prepare(DATASETS["qmnist"], root, download=True)
    x, y = data.read_split(DATASETS["qmnist"], root, False)
    assert tuple(x.shape) == (300, 28, 28) and (y.numpy() == synthetic_split(300, 2)[1]).all()


def test_emnist_downloads_its_zip_through_torchvision(tmp_path, file_server, monkeypatch):
    """torchvision's EMNIST download: one gzip.zip of every split's .gz files, MD5-checked."""
    import gzip
    import zipfile

    import torchvision.datasets as tvd

    from mnist_hpc.training import data

    served, url = file_server
    src = make_emnist(tmp_path / "src", "digits", 10) / "EMNIST" / "raw"
    with zipfile.ZipFile(served / "gzip.zip", "w") as z:
        for f in sorted(src.iterdir()):
            z.writestr(f"gzip/{f.name}.gz", gzip.compress(f.read_bytes()))
    monkeypatch.setattr(tvd.EMNIST, "url", f"{url}/gzip.zip")
    monkeypatch.setattr(tvd.EMNIST, "md5", _md5(served / "gzip.zip"))
    monkeypatch.delenv("MNIST_HPC_OFFLINE", raising=False)
    root = tmp_path / "data"
    data.prepare(DATASETS["emnist-digits"], root, download=True)
    x, _ = data.read_split(DATASETS["emnist-digits"], root, True)
    assert (x.numpy() == synthetic_split(600, 1)[0]).all()  # upright after the transposed storage


def test_a_failed_download_of_a_new_dataset_is_one_line(cli, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.EMNIST, "url", "http://127.0.0.1:9/gzip.zip")  # nothing listens there
    monkeypatch.delenv("MNIST_HPC_OFFLINE", raising=False)
    r = cli("data", "download", "--dataset", "emnist-letters", "--data-dir", tmp_path / "d")
    assert r.code == 1 and "download failed" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_an_image_folder_is_staged_through_the_data_archive(cli, tmp_path):
    """`data pack folder:PATH` packs the images; a job unpacks the archive into its data folder
    ($SLURM_TMPDIR) and trains from there, without the shared path."""
    import shutil
    import tarfile

    images = tmp_path / "pets"
    _write_images(images, per_class=6)
    r = cli(
        "data", "pack", f"folder:{images}", "--output", tmp_path / "data.tar", "--data-dir", tmp_path / "d0"
    )
    assert r.code == 0 and "folder:pets-" in r.out, r
    job_data = tmp_path / "job-tmpdir"
    with tarfile.open(tmp_path / "data.tar") as tar:
        tar.extractall(job_data, filter="data")
    cfg = tmp_path / "pets.yaml"
    cfg.write_text(f"""
experiment: {{name: pets, output_dir: {tmp_path / "runs"}}}
data: {{dataset: folder, root: {images}, image_size: 16, val_split: null, batch_size: 6}}
model: {{name: fast, width: 4}}
train: {{epochs: 1}}
runtime: {{threads: 1}}
""")
    shutil.rmtree(images)  # the compute node cannot see it
    r = cli("train", cfg, "--data-dir", job_data)
    assert r.code == 0, r
    s = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    assert set(s["per_class"]) == {"cat", "dog", "owl"}
