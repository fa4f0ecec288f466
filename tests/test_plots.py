"""plots: every figure is a valid, sensibly sized PNG, written atomically."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_hpc.config.datasets import DATASETS
from mnist_hpc.runs import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MNIST = list(DATASETS["mnist"].classes)
FASHION = list(DATASETS["fashion-mnist"].classes)


def assert_png(path, min_side=200, max_side=2600):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.load()
        w, h = img.size
        assert img.format == "PNG"
    assert min_side <= w <= max_side and min_side // 4 <= h <= max_side, (w, h)
    assert not list(path.parent.glob("*.tmp.png")), "temporary file left behind"
    return w, h


def rows(n, with_val=True):
    out = []
    for e in range(1, n + 1):
        out.append(
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_acc": 1 - 0.1 / e,
                "val_loss": 1.1 / e if with_val else None,
                "val_acc": 1 - 0.12 / e if with_val else None,
            }
        )
    return out


def test_learning_curves(tmp_path):
    p = plots.learning_curves(rows(14), tmp_path / "plots" / "learning_curves.png")
    assert p == tmp_path / "plots" / "learning_curves.png"
    w, h = assert_png(p)
    assert w > h  # two panels side by side


def test_learning_curves_without_validation_and_from_csv_strings(tmp_path):
    assert_png(plots.learning_curves(rows(3, with_val=False), tmp_path / "a.png"))
    csv_like = [
        {"epoch": "1", "train_loss": "0.5", "train_acc": "0.9", "val_loss": "", "val_acc": ""},
        {"epoch": "2", "train_loss": "0.3", "train_acc": "0.95", "val_loss": "nan", "val_acc": ""},
    ]
    assert_png(plots.learning_curves(csv_like, tmp_path / "b.png"))


def test_learning_curves_single_epoch_and_empty(tmp_path):
    assert_png(plots.learning_curves(rows(1), tmp_path / "one.png"))
    assert_png(plots.learning_curves([], tmp_path / "none.png"))


def test_accuracy_is_shown_in_percent():
    assert plots._as_percent([([1], [0.5])]) == [([1], [50.0])]
    assert plots._as_percent([([1], [50.0])]) == [([1], [50.0])]  # already percent


def cm_for(n, seed=0):
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 8, size=(n, n))
    np.fill_diagonal(cm, rng.integers(900, 1135, size=n))
    return cm.tolist()


@pytest.mark.parametrize("names", [MNIST, FASHION], ids=["mnist", "fashion"])
@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_plot(tmp_path, names, normalize):
    p = plots.confusion_matrix_plot(
        cm_for(10), names, tmp_path / "cm.png", title="Test set", normalize=normalize
    )
    assert_png(p, min_side=500, max_side=1600)


def test_confusion_matrix_plot_edge_cases(tmp_path):
    assert_png(plots.confusion_matrix_plot([[0, 0], [0, 0]], ["a", "b"], tmp_path / "z.png"))
    assert_png(
        plots.confusion_matrix_plot(cm_for(40), [f"class {i}" for i in range(40)], tmp_path / "big.png"),
        max_side=3000,
    )
    with pytest.raises(ValueError, match="3 class names"):
        plots.confusion_matrix_plot(cm_for(10), ["a", "b", "c"], tmp_path / "bad.png")


def mistakes(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    true = rng.integers(0, 10, size=n)
    pred = (true + 1 + rng.integers(0, 9, size=n)) % 10
    probs = rng.uniform(0.3, 1.0, size=n)
    return images, true, pred, probs


@pytest.mark.parametrize("names", [MNIST, FASHION], ids=["mnist", "fashion"])
def test_misclassified_grid(tmp_path, names):
    images, true, pred, probs = mistakes(50)
    p = plots.misclassified_grid(images, true, pred, probs, names, tmp_path / "mis.png", total=123)
    assert_png(p, min_side=500, max_side=1600)


def test_misclassified_grid_inputs(tmp_path):
    images, true, pred, _ = mistakes(5)
    full_probs = np.full((5, 10), 0.05)
    # lists of arrays, float images in [0, 1], N×1×28×28, full probability rows, no probs
    assert_png(
        plots.misclassified_grid(list(images), list(true), list(pred), full_probs, MNIST, tmp_path / "a.png"),
        min_side=100,
    )
    assert_png(
        plots.misclassified_grid(images[:, None] / 255.0, true, pred, None, MNIST, tmp_path / "b.png"),
        min_side=100,
    )
    assert_png(
        plots.misclassified_grid(images[:1], true[:1], pred[:1], [0.9], FASHION, tmp_path / "c.png"),
        min_side=100,
    )


def test_misclassified_grid_empty(tmp_path):
    p = plots.misclassified_grid([], [], [], [], MNIST, tmp_path / "mis.png")
    assert_png(p, min_side=100)
    p = plots.misclassified_grid(np.zeros((0, 28, 28), np.uint8), [], [], None, MNIST, tmp_path / "mis2.png")
    assert_png(p, min_side=100)


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "learning_curves.png"
    target.write_bytes(b"old")
    plots.learning_curves(rows(2), target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(x.name for x in tmp_path.iterdir()) == ["learning_curves.png"]


def test_failed_render_leaves_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def boom(self, fname, **kwargs):  # half a PNG written, to a path or an open file
        if hasattr(fname, "write"):
            fname.write(b"half")
        else:
            with open(fname, "wb") as f:
                f.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.learning_curves(rows(2), tmp_path / "lc.png")
    assert list(tmp_path.iterdir()) == []


def test_import_is_light_and_torch_free(tmp_path):
    code = (
        "import sys, mnist_hpc.runs.plots as p; assert 'matplotlib' not in sys.modules;"
        f"p.learning_curves([], r'{tmp_path / 'x.png'}');"
        "print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
