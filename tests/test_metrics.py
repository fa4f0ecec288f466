"""metrics: confusion matrix and per-class figures, checked by hand on a small example."""

import json
import math
import random
import sys

import pytest

from mnist_hpc.training.metrics import accuracy, confusion_matrix, macro_f1, per_class_metrics, top_confusions

# 3 classes; class 2 ("c") is never predicted.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 0]
Y_PRED = [0, 0, 1, 1, 0, 1, 0, 0]
#               pred 0  1  2
EXPECTED_CM = [
    [3, 1, 0],  # true 0: 4 samples
    [1, 1, 0],  # true 1: 2 samples
    [1, 1, 0],
]  # true 2: 2 samples, never right


def test_confusion_matrix_rows_are_true_class():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3) == EXPECTED_CM


def test_per_class_by_hand():
    pc = per_class_metrics(EXPECTED_CM, ["a", "b", "c"])
    assert list(pc) == ["a", "b", "c"]
    # a: tp 3, predicted 5 (col), true 4 (row)
    assert pc["a"]["precision"] == pytest.approx(3 / 5)
    assert pc["a"]["recall"] == pytest.approx(3 / 4)
    assert pc["a"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert pc["a"]["support"] == 4
    # b: tp 1, predicted 3, true 2
    assert pc["b"]["precision"] == pytest.approx(1 / 3)
    assert pc["b"]["recall"] == pytest.approx(1 / 2)
    assert pc["b"]["f1"] == pytest.approx(0.4)
    # c: never predicted → precision 0.0 (not NaN), recall 0, f1 0
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert isinstance(pc["c"]["support"], int)


def test_macro_f1_and_accuracy():
    pc = per_class_metrics(EXPECTED_CM, ["a", "b", "c"])
    f1_a = 2 * 0.6 * 0.75 / 1.35
    assert macro_f1(pc) == pytest.approx((f1_a + 0.4 + 0.0) / 3)
    assert accuracy(EXPECTED_CM) == pytest.approx(4 / 8)


def test_class_absent_from_labels_and_predictions_is_zero_not_nan():
    cm = confusion_matrix([0, 1, 0], [0, 1, 1], 3)
    pc = per_class_metrics(cm, ["x", "y", "z"])
    assert pc["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    text = json.dumps(pc, allow_nan=False)  # summary.json must stay valid JSON
    assert "NaN" not in text
    assert all(not math.isnan(v) for m in pc.values() for v in m.values())


def test_empty_inputs():
    cm = confusion_matrix([], [], 2)
    assert cm == [[0, 0], [0, 0]]
    assert accuracy(cm) == 0.0
    assert macro_f1(per_class_metrics(cm, ["0", "1"])) == 0.0
    assert macro_f1({}) == 0.0


def test_perfect_predictions():
    y = list(range(10)) * 5
    cm = confusion_matrix(y, y, 10)
    pc = per_class_metrics(cm, [str(i) for i in range(10)])
    assert accuracy(cm) == 1.0 and macro_f1(pc) == 1.0
    assert all(m["support"] == 5 for m in pc.values())


def test_accepts_numpy_arrays_and_matrices():
    np = pytest.importorskip("numpy")
    cm = confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED, dtype=np.int64), 3)
    assert cm == EXPECTED_CM and all(type(v) is int for row in cm for v in row)
    # the engine's device-side matrix (torch.bincount(...).view(C, C).cpu()) arrives like this
    pc = per_class_metrics(np.array(EXPECTED_CM), ["a", "b", "c"])
    assert pc["b"]["support"] == 2 and type(pc["b"]["support"]) is int
    assert accuracy(np.array(EXPECTED_CM)) == pytest.approx(0.5)


def test_ten_thousand_samples_are_fast_enough():
    import time

    rng = random.Random(0)
    y = [rng.randrange(10) for _ in range(10_000)]
    p = [t if rng.random() < 0.99 else rng.randrange(10) for t in y]
    start = time.perf_counter()
    cm = confusion_matrix(y, p, 10)
    pc = per_class_metrics(cm, [str(i) for i in range(10)])
    elapsed = time.perf_counter() - start
    assert sum(map(sum, cm)) == 10_000
    assert 0.98 < accuracy(cm) <= 1.0 and 0.98 < macro_f1(pc) <= 1.0
    assert elapsed < 1.0  # generous: a few milliseconds in practice


@pytest.mark.parametrize(
    "true, pred, n, message",
    [
        ([0, 1], [0], 2, "y_true has 2 labels but y_pred has 1"),
        ([0, 2], [0, 1], 2, "out of range"),
        ([0, -1], [0, 1], 2, "out of range"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_bad_inputs(true, pred, n, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(true, pred, n)


def test_per_class_checks_shape_and_names():
    with pytest.raises(ValueError, match="2 class names for a 3x3"):
        per_class_metrics(EXPECTED_CM, ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        per_class_metrics([[1, 2], [3]], ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        per_class_metrics([[1, 0], [0, 1]], ["a", "a"])


def test_top_confusions():
    assert top_confusions(EXPECTED_CM, ["a", "b", "c"], k=2) == [("a", "b", 1), ("b", "a", 1)]
    assert top_confusions([[5, 0], [0, 5]], ["a", "b"]) == []


def test_no_torch_import():
    import subprocess

    code = "import sys, mnist_hpc.training.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
