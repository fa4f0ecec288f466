"""A run name of emoji (issue 27, defect 18): the plots are drawn without a missing-glyph
warning per plot; characters the font lacks fall back to '?', the rest of the text stays."""

from __future__ import annotations

import warnings

from mnist_hpc.runs import plots


def test_an_emoji_run_name_draws_without_glyph_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.confusion_matrix_plot(
            [[5, 1], [2, 7]], ["🦊 fox", "Zürich"], tmp_path / "cm.png", title="🦊🐙: test confusion matrix"
        )
        rows = [
            {
                "epoch": e,
                "train_loss": 1 / e,
                "train_acc": 0.5 + e / 10,
                "val_loss": 1.1 / e,
                "val_acc": 0.5 + e / 11,
            }
            for e in (1, 2, 3)
        ]
        plots.learning_curves(rows, tmp_path / "lc.png", title="run 🦊")
    glyphs = [str(w.message) for w in caught if "glyph" in str(w.message).lower()]
    assert glyphs == [] and (tmp_path / "cm.png").stat().st_size > 0 and (tmp_path / "lc.png").is_file()


def test_only_the_characters_the_font_lacks_fall_back(tmp_path):
    fig = plots._new_figure(2, 2)
    ax = fig.subplots()
    title = ax.set_title("🦊 Zürich 10%")
    plots.drawable_texts(fig)
    assert title.get_text() == "? Zürich 10%"
