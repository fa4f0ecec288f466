"""Exports that cannot destroy or confuse (issue 27, defects 1-4): the output never replaces its
own checkpoint (or a link to it, or any file that is not an earlier export); a folder that cannot
be written is one line; a killed or stopped export leaves no temporary file; an exported model
refuses images of another shape, and a file that is not the one its card describes, in one line;
a TorchScript file copied without its card says that the card is missing and what it holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_hpc.errors import UserError
from mnist_hpc.runs import folder
from mnist_hpc.training import exported
from tests.cli_support import one_line


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture
def own(run, tmp_path):  # a private copy of the trained run, to damage at will
    shutil.copytree(run, tmp_path / "run", symlinks=True)
    shutil.rmtree(tmp_path / "run" / "exports", ignore_errors=True)
    return tmp_path / "run"


def last(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("last-*.pt"))[-1]


# --------------------------------------------------------------------------- defect 1


def test_export_refuses_to_write_over_its_own_checkpoint(own, cli, tmp_path):
    checkpoint = last(own)
    before = sha(checkpoint)
    line = one_line(cli("export", checkpoint, "--format", "state_dict", "--out", checkpoint))
    assert (
        line.startswith(f"error: --out {checkpoint}: that is the checkpoint being exported")
        and "choose another --out" in line
    )
    (tmp_path / "link.pt").symlink_to(checkpoint)
    os.link(checkpoint, tmp_path / "hard.pt")
    for out in (tmp_path / "link.pt", tmp_path / "hard.pt"):
        assert "that is the checkpoint being exported" in one_line(
            cli("export", checkpoint, "--format", "torchscript", "--out", out)
        )
    # from the run folder too (its best, else newest checkpoint), and any other saved file of the run
    assert "that is the checkpoint being exported" in one_line(
        cli("export", own, "--format", "state_dict", "--out", checkpoint)
    )
    config = (own / "config.yaml").read_bytes()
    assert "is not an exported model" in one_line(
        cli("export", own, "--format", "state_dict", "--out", own / "config.yaml")
    )
    assert sha(checkpoint) == before and (own / "config.yaml").read_bytes() == config
    assert cli("export", own, "--format", "state_dict").code == 0  # an earlier export may be replaced
    assert cli("export", own, "--format", "state_dict").code == 0


# --------------------------------------------------------------------------- defect 2


def test_export_into_a_folder_it_cannot_write_is_one_line(own, cli, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse the way a read-only folder does
        real_open = open

        def refusing_open(path, *args, **kwargs):
            if Path(path).parent == ro:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(folder, "open", refusing_open, raising=False)
    line = one_line(cli("export", own, "--format", "torchscript", "--out", ro / "m.torchscript.pt"))
    assert line.startswith(
        f"error: {ro}: cannot write the export (Permission denied); choose a writable place with --out"
    ), line
    assert list(ro.iterdir()) == []


def test_a_killed_export_leaves_no_temporary_file_behind(own, cli, monkeypatch):
    exports = own / "exports"
    exports.mkdir()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs: the writer was killed (SIGKILL) mid-write
    stale = exports / f".model.torchscript.pt.tmp-{dead}"
    stale.write_bytes(b"half a model")
    assert cli("export", own, "--format", "torchscript").code == 0
    assert sorted(p.name for p in exports.iterdir()) == [
        "model.torchscript.pt",
        "model.torchscript.pt.card.json",
    ]

    real_save = torch.jit.save

    def save_then_sigterm(obj, f, *a, **k):  # SIGTERM while the file is half written
        real_save(obj, f, *a, **k)
        os.kill(os.getpid(), signal.SIGTERM)

    before = {p.name: sha(p) for p in exports.iterdir()}
    monkeypatch.setattr(torch.jit, "save", save_then_sigterm)
    r = cli("export", own, "--format", "torchscript")
    assert r.code == 143 and one_line(r).endswith(
        "export stopped by SIGTERM; nothing was written (run the export again)"
    )
    assert {p.name: sha(p) for p in exports.iterdir()} == before  # the earlier export, whole; no .tmp
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --------------------------------------------------------------------------- defect 3


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_model_refuses_images_of_another_shape(own, cli, fmt):
    from mnist_hpc.config.extras import installed
    from mnist_hpc.training.inference import predict_arrays

    if fmt == "onnx" and not all(installed(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        pytest.skip("the export extra is not installed (pip install 'mnist-hpc[export]')")
    assert cli("export", own, "--format", fmt).code == 0
    path = own / "exports" / f"model{exported.FORMATS[fmt]}"
    model, _, _ = exported.load_exported(path)
    for shape in ((2, 1, 32, 32), (2, 28, 28), (2, 3, 28, 28)):
        with pytest.raises(
            UserError,
            match=r"takes images of batch×1×28×28 \(its model card\), got "
            + "×".join(map(str, shape))
            + "; give 28×28 digits",
        ):
            model(torch.zeros(*shape))
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(UserError, match=r"image 1: shape \(32, 32\); predict_arrays takes 28×28"):
        predict_arrays(path, [np.zeros((28, 28), np.uint8), np.zeros((32, 32), np.uint8)])
    assert len(predict_arrays(path, [np.zeros((28, 28), np.uint8)])) == 1


def test_an_exported_file_replaced_or_truncated_after_export_is_refused(own, cli, tmp_path):
    from PIL import Image

    assert cli("export", own, "--format", "torchscript").code == 0
    path = own / "exports" / "model.torchscript.pt"
    digit = tmp_path / "d.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(digit)
    assert cli("predict", path, digit).code == 0
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    line = one_line(cli("predict", path, digit))
    assert (
        line.startswith(
            f"error: {path}: not the file its model card describes ({len(data) - 100:,} bytes "
            f"where the card says {len(data):,})"
        )
        and "export it again" in line
    )
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert "(its sha256 differs)" in one_line(cli("evaluate", path, "--device", "cpu"))


# --------------------------------------------------------------------------- defect 4


def test_a_torchscript_file_copied_without_its_card_says_the_card_is_missing(own, cli, tmp_path):
    from PIL import Image

    assert cli("export", own, "--format", "torchscript").code == 0
    for name in ("copy.pt", "model.torchscript.pt"):
        alone = tmp_path / "elsewhere" / name
        alone.parent.mkdir(exist_ok=True)
        shutil.copy(own / "exports" / "model.torchscript.pt", alone)
        digit = tmp_path / "d.png"
        Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(digit)
        line = one_line(cli("predict", alone, digit))
        assert line.startswith(
            f"error: {alone}: no model card beside it ({name}.card.json): the file looks like "
            f"a torchscript export, and its card holds the dataset, the class names and the "
            f"normalisation"
        ), line
        assert "copy the card along with the file" in line
