"""The run folder's figures: learning curves, confusion matrix, misclassified images.

Inputs are plain lists / numpy arrays (never torch). matplotlib is imported inside the functions
so that importing this module is free. Figures are built with the object-oriented API
(``matplotlib.figure.Figure``) on the Agg canvas: no pyplot global state (nothing to leak over a
long sweep, no display needed on a compute node, and a user's own backend is left alone).
Every PNG goes through the project's one atomic writer (``runs.folder.atomic_write_with``),
so a reader never sees half a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias, cast

from mnist_hpc.runs.folder import MetricsRecord, StrPath, atomic_write_with

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from numpy.typing import ArrayLike, NDArray

Series: TypeAlias = "tuple[list[float], list[float]]"  # (epochs, values) of one curve

DPI = 120


def warm_up() -> None:
    """Import matplotlib (≈0.7 s on 2 cores) in a background thread, e.g. while a run trains, so
    that the run's plots, drawn once the test set is evaluated, do not wait for it."""
    import threading

    def load() -> None:
        with suppress(Exception):  # a broken matplotlib shows itself when the plots are drawn
            import matplotlib.backends.backend_agg
            import matplotlib.figure  # noqa: F401

    threading.Thread(target=load, name="mnist-hpc-plots-warm-up", daemon=True).start()


def _new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free Figure with an Agg canvas."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch (and close) a user's pyplot figures
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: StrPath) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_with(
        path, lambda f: savefig_quietly(fig, f, format="png", dpi=DPI, facecolor="white")
    )


MISSING_GLYPH = "?"


def _font_has(prop: FontProperties, char: str, cache: dict[str, set[int] | None]) -> bool:
    from matplotlib.font_manager import findfont, get_font

    path = findfont(prop)
    if path not in cache:
        try:
            cache[path] = set(get_font(path).get_charmap())
        except Exception:
            cache[path] = None
    codes = cache[path]
    return codes is None or ord(char) in codes


def drawable_texts(fig: Figure) -> None:
    """Replace each character no font of its text can draw (an emoji in a run name, say) by
    ``?``, so the figure draws without a missing-glyph warning per plot."""
    from matplotlib.text import Text

    cache: dict[str, set[int] | None] = {}
    for t in cast("list[Text]", fig.findobj(Text)):  # findobj(a class) finds its instances only
        text = t.get_text()
        if not text or text.isascii() or "$" in text:  # ASCII: every font has it; $: mathtext
            continue
        prop = t.get_fontproperties()
        fixed = "".join(c if c.isspace() or _font_has(prop, c, cache) else MISSING_GLYPH for c in text)
        if fixed != text:
            t.set_text(fixed)


@contextmanager
def _quiet_glyphs() -> Iterator[None]:
    """No missing-glyph warning (the texts were made drawable; any left still draw, as boxes)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?i).*glyph.*missing", category=UserWarning)
        yield


def _layout(fig: Figure) -> None:
    """``tight_layout`` (which draws the texts to measure them) after making them drawable."""
    drawable_texts(fig)
    with _quiet_glyphs():
        fig.tight_layout()


def savefig_quietly(fig: Figure, f: StrPath | IO[bytes], **kwargs: Any) -> None:
    """``fig.savefig`` with texts made drawable first (and, should a glyph still be missing, no
    warning for it: the figure is written all the same)."""
    drawable_texts(fig)
    with _quiet_glyphs():
        fig.savefig(f, **kwargs)


def _num(value: str | float | None) -> float | None:
    """A float, or None for a missing value (None, "", NaN, unparsable)."""
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _series(rows: Iterable[MetricsRecord], key: str) -> Series:
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        y = _num(row.get(key))
        if y is None:
            continue
        x = _num(row.get("epoch"))
        xs.append(x if x is not None else i + 1)
        ys.append(y)
    return xs, ys


def _as_percent(series_list: list[Series]) -> list[Series]:
    """Accuracies are fractions in [0, 1] (the run folder's contract); scale them to percent.

    Values above 1 mean the caller already passed percentages; those are left as they are.
    """
    values = [y for _, ys in series_list for y in ys]
    factor = 1.0 if values and max(values) > 1.0 else 100.0
    return [(xs, [y * factor for y in ys]) for xs, ys in series_list]


def integer_ticks(axis: Axis, values: Iterable[float | None]) -> None:
    """Ticks at whole numbers (epochs), also for one or two epochs, where matplotlib's integer
    locator falls back to fractions (0.96, 0.98, 1.00, ...)."""
    from matplotlib.ticker import MaxNLocator

    known = [v for v in values if v is not None]
    if known and max(known) - min(known) < 10:
        axis.set_ticks(range(math.floor(min(known)), math.ceil(max(known)) + 1))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def label_inside(ax: Axes, text: str, x: float, y: float, **style: Any) -> None:
    """Annotate the point (x, y) on the side that keeps the label inside the axes: left of a
    point near the right edge, above a point near the bottom."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = (x - x0) / (x1 - x0) if x1 != x0 else 0.5
    fy = (y - y0) / (y1 - y0) if y1 != y0 else 0.5
    ha = "right" if fx > 0.7 else "left" if fx < 0.3 else "center"
    dx = {"right": -4, "left": 4, "center": 0}[ha]
    va, dy = ("bottom", 6) if fy < 0.3 else ("top", -6)
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, fontsize=8, **style)


def learning_curves(rows: Sequence[MetricsRecord], path: StrPath, title: str | None = None) -> Path:
    """Loss and accuracy (%) per epoch, train vs validation, side by side.

    ``rows``: one dict per epoch with ``epoch, train_loss, train_acc, val_loss, val_acc``
    (``metrics.csv`` rows work as they are: strings are parsed, "" / None mean "no value", so a
    run without a validation split shows the training curves only).
    """
    rows = list(rows)
    fig = _new_figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    tr_loss, va_loss = _series(rows, "train_loss"), _series(rows, "val_loss")
    tr_acc, va_acc = _as_percent([_series(rows, "train_acc"), _series(rows, "val_acc")])
    n_points = max(len(s[0]) for s in (tr_loss, va_loss, tr_acc, va_acc))
    style = {"marker": "o", "markersize": 3.5} if n_points <= 40 else {}

    for ax, (train, val), name, unit in (
        (ax_loss, (tr_loss, va_loss), "Loss", ""),
        (ax_acc, (tr_acc, va_acc), "Accuracy", " (%)"),
    ):
        drawn = False
        if train[0]:
            ax.plot(*train, label=f"train {name.lower()}", color="tab:blue", **style)
            drawn = True
        if val[0]:
            ax.plot(*val, label=f"validation {name.lower()}", color="tab:orange", **style)
            drawn = True
        ax.set_title(f"{name} per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name + unit)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=9)
            integer_ticks(ax.xaxis, train[0] + val[0])
        else:
            ax.text(
                0.5,
                0.5,
                "no data",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
                fontsize=12,
            )

    # Say where the last / best accuracy ended, so the figure answers the usual question.
    if va_acc[1]:
        best = max(range(len(va_acc[1])), key=lambda i: va_acc[1][i])
        label_inside(
            ax_acc, f"best {va_acc[1][best]:.2f}%", va_acc[0][best], va_acc[1][best], color="tab:orange"
        )
    if title:
        fig.suptitle(title)
    _layout(fig)
    return _save(fig, path)


def confusion_matrix_plot(
    cm: Sequence[Sequence[float]],
    class_names: Sequence[str],
    path: StrPath,
    title: str = "Confusion matrix",
    normalize: bool = False,
) -> Path:
    """A heatmap of ``cm[true][pred]`` with the count (or row %, ``normalize=True``) in each cell.

    True label on the y axis, predicted on the x axis; accuracy and sample count under the title.
    """
    import numpy as np

    m = np.asarray([[int(v) for v in row] for row in cm], dtype=np.int64)
    names = [str(c) for c in class_names]
    n = len(names)
    if m.shape != (n, n):
        raise ValueError(f"{n} class names for a confusion matrix of shape {m.shape}")
    total = int(m.sum())
    row_sums = m.sum(axis=1, keepdims=True)
    shown = (
        np.divide(m * 100.0, row_sums, out=np.zeros(m.shape), where=row_sums > 0)
        if normalize
        else m.astype(float)
    )

    longest = max((len(s) for s in names), default=1)
    side = min(20.0, max(5.5, 0.5 * n + 2.0))
    label_room = min(1.5, 0.07 * longest)  # rotated long names need space under the axis
    fig = _new_figure(side + 1.2, side + label_room)
    ax = fig.subplots()
    vmax = 100.0 if normalize else max(1.0, float(shown.max()) if n else 1.0)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("% of true class" if normalize else "count")

    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    rotate = longest > 2
    ax.set_xticklabels(
        names, rotation=45 if rotate else 0, ha="right" if rotate else "center", rotation_mode="anchor"
    )
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    acc = float(np.trace(m)) / total if total else 0.0
    ax.set_title(f"{title}\naccuracy {acc * 100:.2f}% · {total:,} samples", fontsize=11)

    if n <= 30:  # beyond that, numbers would not fit in the cells
        fontsize = 9 if n <= 12 else 7 if n <= 20 else 5
        for i in range(n):
            for j in range(n):
                value = shown[i, j]
                text = f"{value:.1f}" if normalize else f"{int(m[i, j])}"
                if m[i, j] == 0:
                    colour = "0.7"
                else:
                    colour = "white" if value > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    _layout(fig)
    return _save(fig, path)


def _image_2d(img: ArrayLike) -> NDArray[np.uint8]:
    """A 2-D uint8 array (or HxWx3 for colour) from a uint8/float image of shape HxW, 1xHxW,
    HxWx1 or 3xHxW."""
    import numpy as np

    a = np.asarray(img)
    a = np.squeeze(a)
    if a.ndim == 3 and a.shape[0] == 3:  # a colour image, channels first
        a = np.moveaxis(a, 0, -1)
    elif a.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {np.asarray(img).shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and a.max() <= 1.0 and a.min() >= 0.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return a


def _prob_of(probs: Sequence[Any] | NDArray[Any] | None, i: int, pred: int) -> float | None:
    """The predicted class's probability for image ``i``: a scalar, or a row of class probs."""
    if probs is None:
        return None
    p = probs[i]
    with suppress(TypeError, IndexError):
        p = p[pred]
    try:
        return float(p)
    except (TypeError, ValueError):
        return None


def misclassified_grid(
    images: Sequence[ArrayLike] | NDArray[Any],
    true: Sequence[int] | NDArray[Any],
    pred: Sequence[int] | NDArray[Any],
    probs: Sequence[float] | Sequence[Sequence[float]] | NDArray[Any] | None,
    class_names: Sequence[str],
    path: StrPath,
    max_images: int = 36,
    total: int | None = None,
    title: str = "Misclassified images",
) -> Path:
    """A grid of up to ``max_images`` images titled "true → pred (p%)", in the order given.

    ``images``: uint8 array N×28×28 (or a list of 2-D arrays); ``true``/``pred``: class indices;
    ``probs``: per image either the predicted class's probability or the full probability row
    (or ``None``). ``total``: how many mistakes there were in all, when only some are passed.
    An empty list writes a small figure saying so.
    """
    names = [str(c) for c in class_names]
    count = len(images)
    shown = min(count, max(0, int(max_images)))
    total = count if total is None else int(total)
    if shown == 0:
        fig = _new_figure(5, 1.6)
        fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center", fontsize=14)
        return _save(fig, path)

    import numpy as np

    # One Axes showing one mosaic image, the labels as texts over it: 36 Axes and a tight_layout
    # (which draws every text to measure it) took 3 s of the run's 4 s of plotting on 2 cores.
    cols = min(shown, max(1, math.ceil(math.sqrt(shown))))
    nrows = math.ceil(shown / cols)
    cells = [_image_2d(images[k]) for k in range(shown)]
    h = max(c.shape[0] for c in cells)
    w = max(c.shape[1] for c in cells)
    colour = any(c.ndim == 3 for c in cells)
    labels = []
    for k in range(shown):
        t, p = int(true[k]), int(pred[k])
        prob = _prob_of(probs, k, p)
        t_name = names[t] if 0 <= t < len(names) else str(t)
        p_name = names[p] if 0 <= p < len(names) else str(p)
        suffix = f" ({prob * 100:.0f}%)" if prob is not None else ""
        label = f"{t_name} → {p_name}{suffix}"
        if len(label) > 16:  # Fashion-MNIST names: two lines keep the cells narrow
            label = f"{t_name} →\n{p_name}{suffix}"
        labels.append(label)

    cell_in, fontsize, gap = 1.55, 7.5, max(2, w // 10)  # a cell's width (inches), label size (pt)
    pitch_x = w + 2 * gap  # pixels per cell across
    pt_per_px = cell_in * 72 / pitch_x
    lines = max(label.count("\n") + 1 for label in labels)
    label_px = math.ceil(lines * fontsize * 1.25 / pt_per_px) + 1
    pitch_y = h + label_px + gap
    mosaic = np.full(
        (nrows * pitch_y, cols * pitch_x, 3) if colour else (nrows * pitch_y, cols * pitch_x), 255, np.uint8
    )
    title_in = 0.5
    fig = _new_figure(cols * cell_in, nrows * pitch_y * cell_in / pitch_x + title_in)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - title_in / fig.get_figheight()))
    ax.set_axis_off()
    for k, (img, label) in enumerate(zip(cells, labels, strict=True)):
        r, c = divmod(k, cols)
        top, left = r * pitch_y + label_px, c * pitch_x + gap
        if colour and img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        mosaic[top : top + img.shape[0], left : left + img.shape[1]] = img
        ax.text(
            left + w / 2 - 0.5,
            top - 1.0,
            label,
            ha="center",
            va="bottom",
            fontsize=fontsize,
            color="darkred",
            linespacing=1.1,
        )
    ax.imshow(
        mosaic, cmap=None if colour else "gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto"
    )
    ax.set_xlim(-0.5, mosaic.shape[1] - 0.5)
    ax.set_ylim(mosaic.shape[0] - 0.5, -0.5)
    heading = (
        f"{title} (true → predicted): {shown} of {total}"
        if total > shown
        else f"{title} (true → predicted): {shown}"
    )
    fig.suptitle(heading, fontsize=10, y=1.0 - 0.12 / fig.get_figheight(), va="top")
    return _save(fig, path)
