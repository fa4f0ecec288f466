"""What the README's commands write into a clone is git-ignored (issue 27, defect 27): `git status`
after following the README shows only the user's own edits."""

import re
import shutil
import subprocess

import pytest

from tests.paths import ROOT

# written by commands the README shows without an output option: runs/ (train), data/ (data
# download into the clone), report.html (report --html without --out: in the first DIR, or here
# by the Python API's example)
ALWAYS = ["runs/quickstart-x/summary.json", "data/MNIST/raw/x", "report.html"]


def readme_outputs() -> list[str]:
    """Every `--out PATH` / `--plots DIR` a README command writes, as a path inside the clone."""
    text = (ROOT / "README.md").read_text()
    found = []
    for flag, target in re.findall(r"--(out|plots) ([^\s`|)]+)", text):
        if target.isupper() or target.startswith(("/", "$", "~")):  # a placeholder, or outside the clone
            continue
        found.append(target.rstrip("/") + ("/x.png" if flag == "plots" or target.endswith("/") else ""))
    return found


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout"
)
def test_files_the_readme_writes_are_ignored():
    paths = ALWAYS + readme_outputs()
    assert {"report.md", "figures/x.png", "report.html", "models/x.png"} <= set(paths)
    missed = [
        p
        for p in paths
        if subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=ROOT).returncode != 0
    ]
    assert not missed, f"not git-ignored: {missed}"
