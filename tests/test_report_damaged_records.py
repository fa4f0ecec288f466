"""A summary.json holding a number no float can take (issue 27, defect 13): ``1e400`` (read as
infinity) or ``10**400`` written out is a damaged record: the report names the file and carries
on with the other runs; the Python API's Run.summary says the same in one line."""

from __future__ import annotations

import pytest

import mnist_hpc
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import report as rep
from tests.run_fakes import make_run


@pytest.mark.parametrize(
    "text, says",
    [
        ('"test_accuracy": 1e400', "test_accuracy holds an infinite number (such as 1e400)"),
        ('"test_accuracy": -1e400', "test_accuracy holds an infinite number"),
        ('"train_seconds": 1' + "0" * 400, "train_seconds holds an integer of about 401 digits"),
        ('"per_class": {"0": {"support": 1' + "0" * 400 + "}}", "per_class.0.support holds an integer"),
    ],
)
def test_a_summary_with_a_number_beyond_any_float_is_a_damaged_record(tmp_path, cli, text, says):
    good = make_run(tmp_path / "runs" / "good", 0.97)
    bad = make_run(tmp_path / "runs" / "bad", 0.98)
    summary = (bad / "summary.json").read_text()
    key = text.split(":")[0]
    start = summary.index(key) if key in summary else None
    if start is None:
        summary = summary[:-1] + ", " + text + "}"
    else:
        end = summary.index(",", start)
        summary = summary[:start] + text + summary[end:]
    (bad / "summary.json").write_text(summary)
    runs, skipped = rep.find_runs([tmp_path / "runs"])
    assert [r.path for r in runs] == [good]
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}/summary.json: a damaged record: {says}")
    r = cli("report", tmp_path / "runs")
    assert r.code == 0 and "Traceback" not in r.err, r
    assert f"{bad}/summary.json: a damaged record" in r.err + r.out and "good" in r.out
    with pytest.raises(UserError, match="a damaged record"):
        _ = mnist_hpc.Run.load(bad).summary
