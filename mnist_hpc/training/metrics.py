"""Classification metrics on plain Python lists: confusion matrix, per-class P/R/F1, accuracy.

No torch here (architecture: ``metrics`` is torch-free). The trainer may build the confusion
matrix on the device (``torch.bincount(true * C + pred, minlength=C * C).view(C, C)``) and pass
``cm.tolist()`` to :func:`per_class_metrics`; or pass the predictions to
:func:`confusion_matrix`. Conventions (the same as scikit-learn's):

- rows are the true class, columns the predicted class: ``cm[true][pred]``;
- a ratio whose denominator is zero is 0.0 (a class never predicted has precision 0.0, a class
  absent from the labels has recall 0.0) — never NaN, so ``summary.json`` stays valid JSON;
- ``macro_f1`` is the unweighted mean of the per-class F1 over all classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def confusion_matrix(y_true: Iterable, y_pred: Iterable, num_classes: int) -> list[list[int]]:
    """Count ``(true, pred)`` pairs into a ``num_classes`` x ``num_classes`` matrix of ints.

    Accepts any iterables of integer labels (lists, ranges, numpy arrays, CPU tensors).
    Raises ``ValueError`` on a length mismatch or a label outside ``0..num_classes-1``.
    """
    n = int(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    true = [int(t) for t in y_true]
    pred = [int(p) for p in y_pred]
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} labels but y_pred has {len(pred)}")
    flat = [0] * (n * n)
    for t, p in zip(true, pred, strict=False):
        if not (0 <= t < n and 0 <= p < n):
            raise ValueError(f"label out of range 0..{n - 1}: true={t}, pred={p}")
        flat[t * n + p] += 1
    return [flat[i * n : (i + 1) * n] for i in range(n)]


def _as_square(cm: Sequence[Sequence]) -> list[list[int]]:
    """The matrix as a list of lists of ints (accepts numpy arrays or nested lists)."""
    rows = [[int(v) for v in row] for row in cm]
    if any(len(row) != len(rows) for row in rows):
        raise ValueError(
            f"the confusion matrix must be square, got {len(rows)} rows of lengths "
            f"{sorted({len(r) for r in rows})}"
        )
    return rows


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def per_class_metrics(cm: Sequence[Sequence], class_names: Sequence[str]) -> dict[str, dict]:
    """``{name: {"precision", "recall", "f1", "support"}}`` in class order, from ``cm[true][pred]``.

    ``support`` is the number of true samples of the class (an int); the others are floats in
    [0, 1], 0.0 where undefined.
    """
    rows = _as_square(cm)
    names = [str(c) for c in class_names]
    if len(names) != len(rows):
        raise ValueError(f"{len(names)} class names for a {len(rows)}x{len(rows)} confusion matrix")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names: {names}")
    col_sums = [sum(col) for col in zip(*rows, strict=False)] if rows else []
    out: dict[str, dict] = {}
    for i, name in enumerate(names):
        tp = rows[i][i]
        support = sum(rows[i])
        precision = _ratio(tp, col_sums[i])
        recall = _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro_f1(per_class: Mapping[str, Mapping]) -> float:
    """The unweighted mean F1 over the classes of :func:`per_class_metrics` (0.0 if none)."""
    values = [float(m["f1"]) for m in per_class.values()]
    return sum(values) / len(values) if values else 0.0


def accuracy(cm: Sequence[Sequence]) -> float:
    """The fraction of samples on the diagonal, in [0, 1] (0.0 for an empty matrix)."""
    rows = _as_square(cm)
    total = sum(sum(row) for row in rows)
    return _ratio(sum(rows[i][i] for i in range(len(rows))), total)


def top_confusions(cm: Sequence[Sequence], class_names: Sequence[str], k: int = 5) -> list[tuple]:
    """The ``k`` most frequent mistakes as ``(true_name, pred_name, count)``, largest first.

    Handy for a one-line "most confused: 4→9 (12), 7→2 (9)" after evaluation.
    """
    rows = _as_square(cm)
    names = [str(c) for c in class_names]
    pairs = [
        (rows[t][p], t, p) for t in range(len(rows)) for p in range(len(rows)) if t != p and rows[t][p] > 0
    ]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [(names[t], names[p], c) for c, t, p in pairs[: max(0, int(k))]]
