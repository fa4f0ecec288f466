"""The HTML report in real headless Chromium (tests/browser_support.py; skipped where Chromium is
not installed): one self-contained file whose every figure decodes, whose table sorts when a
heading is clicked, and which asks the network for nothing. The probe is shown to catch a page
that does fetch something, so its "nothing" means something."""

from __future__ import annotations

import re

from click.testing import CliRunner

from mnist_hpc.cli.experiments import report_command
from tests.browser_support import check_page, column, open_page


def test_the_probe_sees_a_page_that_fetches(tmp_path):
    page = tmp_path / "fetches.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://198.51.100.7/logo.png">'
        '<script src="https://cdn.example.com/plot.js"></script></body></html>'
    )
    seen = open_page(page, tmp_path / "probe")
    assert seen.requests == ["http://198.51.100.7/logo.png", "https://cdn.example.com/plot.js"]
    assert 'data-probe-width="0"' in seen.dom  # an image that did not load is seen as such


def test_a_sweep_report_renders_sorts_and_fetches_nothing(lr_sweep, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report_command, [str(lr_sweep), "--html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text) and "@import" not in text and "url(" not in text
    # click the "test acc %" heading once (ascending), as a reader would
    clicks = """var th = Array.from(document.querySelectorAll("#runs th")).find(function (h) {
                  return h.textContent === "test acc %"; }); th.click();"""
    page = open_page(out, tmp_path / "browser", clicks)
    check_page(page, figures=2)
    header = re.findall(r"<th[^>]*>(.*?)</th>", re.search(r'id="runs".*?</thead>', page.dom, re.S).group(0))
    acc = column(page.dom, "runs", header.index("test acc %"))
    assert acc == sorted(acc, key=lambda t: float(t.split()[0])) and acc[0].startswith("88.70"), acc
    # a second click on the same heading: descending
    page = open_page(out, tmp_path / "browser2", clicks + " th.click();")
    acc = column(page.dom, "runs", header.index("test acc %"))
    assert acc == sorted(acc, key=lambda t: -float(t.split()[0])) and acc[-1].startswith("88.70"), acc
