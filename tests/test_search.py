"""Optuna sweeps (method: optuna) on the synthetic data: the sweep file's checks, a 12-trial TPE
study with the median pruner run by 2 local workers (each trial exactly once in the journal,
pruned ones stopped early and marked, the best trial's config retraining to the same accuracy),
the same study resumed after kill -9 of every worker without rerunning a finished trial, and the
worker's rules for a trial whose worker is gone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_hpc.config import ConfigError
from mnist_hpc.experiments.sweepfile import load_sweep
from tests.paths import ROOT
from tests.search_support import BASE, STUDY, launches, make_study, trials_of

optuna = pytest.importorskip("optuna", reason="method: optuna needs the [search] extra (pip install optuna)")


def cli(*args, data, check=True, timeout=600):
    env = {**os.environ, "MNIST_HPC_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_hpc", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mnist-hpc {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


# --------------------------------------------------------------------------- the sweep file


def _write(tmp_path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text(BASE.format(out=tmp_path / "runs", epochs=2))
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "change, message",
    [
        ("n_trials: 0", r"n_trials: expected a positive number"),
        ("sampler: annealing", r"sampler: expected one of tpe, random, cmaes, grid"),
        ("pruner: sometimes", r"pruner: expected one of median, hyperband, none"),
        ("metric: time_to_target", r"target: metric: time_to_target needs target"),
        ("grid: {optim.lr: [0.1]}", r"grid: method: optuna draws its runs from params:"),
    ],
)
def test_a_bad_study_is_one_line_naming_the_key(tmp_path, change, message):
    key = change.split(":")[0]
    text = "".join(line + "\n" for line in STUDY.format(n=4).splitlines() if not line.startswith(key + ":"))
    text += change + "\n"
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, text))


def test_search_keys_are_checked_like_axes(tmp_path):
    text = STUDY.format(n=4).replace("model.hidden:", "model.hiden:")
    with pytest.raises(
        ConfigError, match=r"params.model.hiden: unknown key model.hiden.*did you mean 'hidden'"
    ):
        load_sweep(_write(tmp_path, text))
    # a bound outside what the config accepts is found before anything runs
    text = STUDY.format(n=4).replace("int: [16, 64]", "int: [0, 64]")
    with pytest.raises(ConfigError, match=r"params.model.hidden.*positive integer"):
        load_sweep(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"n_trials: belongs to an adaptive search: add method: optuna"):
        load_sweep(_write(tmp_path, "base: base.yaml\nn_trials: 3\ngrid: {optim.lr: [0.1]}\n"))
    text = STUDY.format(n=4).replace("sampler: tpe", "sampler: grid").replace("log: true", "")
    with pytest.raises(ConfigError, match=r"sampler: grid needs a step for a float range"):
        load_sweep(_write(tmp_path, text))


def test_a_study_is_shown_by_plan_and_missing_optuna_is_one_line(tmp_path, synth_root):
    path = _write(tmp_path, STUDY.format(n=5))
    out = cli("sweep", "plan", path, data=synth_root).stdout
    assert "an Optuna study of 5 trials" in out and "optim.lr: float from 1e-05 to 0.1 (log scale)" in out
    assert "no trials yet" in out
    # without optuna: one line that says what to install, no traceback
    code = (
        "import sys; sys.modules['optuna'] = None; from mnist_hpc.cli import main; "
        f"sys.argv = ['mnist-hpc', 'sweep', 'run', {str(path)!r}]; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: method: optuna needs optuna, which is not installed: pip install 'mnist-hpc[search]' "
        "(or just: pip install optuna)"
    ], proc.stderr


# --------------------------------------------------------------------------- the owners


def test_a_running_trial_is_stale_only_when_its_worker_is_gone():
    from mnist_hpc.experiments.search import Me, stale

    me = Me("node1", os.getpid(), None, 0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    assert stale(None, me)  # claimed and never recorded
    assert not stale({"host": "node1", "pid": os.getpid(), "beat": now}, me)  # another thread of mine
    assert stale({"host": "node1", "pid": dead.pid, "child": None, "beat": now}, me)
    assert not stale(
        {"host": "node1", "pid": dead.pid, "child": os.getpid(), "beat": now}, me
    )  # trainer exiting
    assert not stale({"host": "node2", "pid": 1, "beat": now - 60}, me)  # another node, beating
    assert stale({"host": "node2", "pid": 1, "beat": now - 3600}, me)  # another node, silent for an hour
    task = Me("node1", os.getpid(), "77_2", 2)  # the requeued array task 77_2 finds its own trial
    assert stale({"host": "node3", "pid": 5, "task": "77_2", "beat": now}, task)
    assert not stale({"host": "node3", "pid": 5, "task": "77_1", "beat": now}, task)


# --------------------------------------------------------------------------- the study


# the study's tests take minutes of training (slow); `make test` keeps a file on one pytest-xdist
# worker (--dist loadfile), so the study runs once


@pytest.fixture(scope="module")
def study_12(synth_root, tmp_path_factory):
    """A 12-trial TPE study with the median pruner, run by 2 local workers."""
    folder = tmp_path_factory.mktemp("study12")
    path = make_study(folder, 12)
    proc = cli("sweep", "run", path, "-j", "2", data=synth_root)
    return path, folder / "runs" / "sweeps" / "study", proc.stdout


@pytest.mark.slow
def test_twelve_trials_each_once_pruned_ones_marked(study_12):
    _path, sweep_dir, out = study_12
    trials = trials_of(sweep_dir)
    assert [t.number for t in trials] == list(range(12)), out
    states = {t.number: t.state.name for t in trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED"}, states
    assert "PRUNED" in states.values(), f"no trial was pruned: {states}\n{out}"
    assert "study study: 12 of 12 trials" in out
    for t in trials:
        run_dir = sweep_dir / t.user_attrs["run"]
        assert launches(run_dir) == 1, run_dir  # trained once
        epochs = len((run_dir / "metrics.csv").read_text().splitlines()) - 1
        if t.state.name == "PRUNED":  # stopped by the pruner after its first epoch: no summary
            assert epochs == 1 and not (run_dir / "summary.json").exists(), run_dir
            assert sorted(t.intermediate_values) == [1]
        else:
            assert epochs == 2 and json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
            assert t.value == pytest.approx(max(t.intermediate_values.values()))
    assert len(list(sweep_dir.glob("trial-*"))) == 12


@pytest.mark.slow
def test_the_best_trial_retrains_to_the_same_accuracy(study_12, synth_root, tmp_path):
    _path, _sweep_dir, out = study_12
    best_line = next(line for line in out.splitlines() if line.startswith("best: trial"))
    config = Path(best_line.rsplit("mnist-hpc train ", 1)[1])
    assert config.is_file()
    again = tmp_path / "again"
    cli("train", config, "--run-dir", again, data=synth_root)
    before = json.loads((config.parent / "summary.json").read_text())
    after = json.loads((again / "summary.json").read_text())
    assert after["test_accuracy"] == before["test_accuracy"]
    assert after["best_val_accuracy"] == before["best_val_accuracy"]


@pytest.mark.slow
def test_the_study_resumes_after_kill_9_of_every_worker(synth_root, tmp_path):
    epochs = 4  # so that a trial past its first epoch and before its last has a whole epoch of steps left
    path = make_study(tmp_path, 8, epochs=epochs)
    sweep_dir = tmp_path / "runs" / "sweeps" / "study"
    env = {**os.environ, "MNIST_HPC_DATA_DIR": str(synth_root), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpc", "sweep", "run", str(path), "-j", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def epochs_done(t) -> int:
        csv = sweep_dir / t.user_attrs.get("run", "-") / "metrics.csv"
        return max(len(csv.read_text().splitlines()) - 1, 0) if csv.exists() else 0

    deadline = time.monotonic() + 300
    try:
        # until a trial is done and another is mid-way: a checkpoint written, an epoch or more to go
        # (a kill near the end of a last epoch lets that trial finish, which would prove nothing)
        while time.monotonic() < deadline and proc.poll() is None:
            trials = trials_of(sweep_dir)
            if trials:
                done = [t for t in trials if t.state.is_finished()]
                mid_way = [
                    t
                    for t in trials
                    if t.state.name == "RUNNING"
                    and 1 <= epochs_done(t) <= epochs - 2
                    and any((sweep_dir / t.user_attrs["run"] / "checkpoints").glob("last-*.pt"))
                ]
                if done and mid_way:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(
                f"no trial was caught mid-way (the study {'ended' if proc.poll() is not None else 'hung'})"
            )
    finally:
        proc.send_signal(signal.SIGKILL)  # every worker: the threads of this process
        proc.wait()
        killed_at = time.time()
    finished = {
        t.number: (t.state.name, (sweep_dir / t.user_attrs["run"] / "metrics.csv").stat().st_mtime_ns)
        for t in trials_of(sweep_dir)
        if t.state.is_finished()
    }
    in_flight = [
        t.number
        for t in trials_of(sweep_dir)
        if t.state.name == "RUNNING" and not (sweep_dir / t.user_attrs["run"] / "summary.json").exists()
    ]
    assert in_flight, "nothing was in flight when the workers were killed"

    out = cli("sweep", "run", path, "-j", "2", data=synth_root).stdout
    trials = trials_of(sweep_dir)
    assert [t.number for t in trials] == list(range(8)), out
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), out
    resumed = []
    for t in trials:
        run_dir = sweep_dir / t.user_attrs["run"]
        if t.number in finished:  # never trained again: the same files, one start
            assert (t.state.name, (run_dir / "metrics.csv").stat().st_mtime_ns) == finished[t.number]
            assert launches(run_dir) == 1
            assert f"[trial {t.number}]" not in out
        elif t.number in in_flight:
            # its trainer got SIGTERM when its worker died and stopped at the next step, to be
            # resumed from its checkpoint in its own folder; one at the end of its last epoch has
            # no step left and finishes, and is then only told to the study
            if launches(run_dir) == 2:
                assert re.search(rf"\[trial {t.number}\] \S+: resumed", out), out
                assert "--resume auto" in (run_dir / "train.log").read_text()
                resumed.append(t.number)
            else:
                assert launches(run_dir) == 1 and (run_dir / "summary.json").stat().st_mtime > killed_at - 1
    assert resumed, f"no in-flight trial was resumed: {in_flight}\n{out}"


@pytest.mark.slow
def test_the_study_report_opens_in_chromium_with_every_plot(study_12, synth_root, tmp_path):
    from tests.browser_support import check_page, column, open_page

    path, sweep_dir, _ = study_12
    out = cli("sweep", "report", path, data=synth_root)
    page_file = sweep_dir / "report.html"
    assert f"wrote {page_file}" in out.stderr and "best: trial" in out.stdout
    text = page_file.read_text()
    for name in ("study_history", "study_importance", "study_slice", "study_epochs"):
        assert f'alt="{name}"' in text, name
    assert f"optuna-dashboard {sweep_dir / 'study.journal'}" in text
    pruned = [t.number for t in trials_of(sweep_dir) if t.state.name == "PRUNED"]
    assert text.count("<tr class=pruned>") == len(pruned) > 0
    # sort the trials by their value (third column), as a click on its heading does
    page = open_page(page_file, tmp_path / "browser", 'document.querySelectorAll("#trials th")[2].click();')
    figures = text.count("<img alt=")
    check_page(page, figures=figures)
    values = [float(v) for v in column(page.dom, "trials", 2) if v]
    assert values == sorted(values) and len(values) == 12


def test_the_search_extra_and_the_job_packages_agree():
    from mnist_hpc.config.extras import NEEDS, search_packages

    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {r.split(">")[0].split("=")[0].strip() for r in extras["search"]}
    assert names == {n.package for k in ("optuna", "cmaes") for n in NEEDS[k]}
    assert search_packages("tpe") == ["optuna"] and search_packages("cmaes") == ["optuna", "cmaes"]
    assert "search" in (ROOT / "Makefile").read_text().split(".[dev,", 1)[1].split("]", 1)[0]


def test_sweep_submit_dry_run_makes_the_study_s_workers_an_array(tmp_path):
    path = _write(tmp_path, STUDY.format(n=12))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; from mnist_hpc.cli.main import cli, main; from mnist_hpc.cli.cluster import register; "
        "register(cli); sys.argv[0] = 'mnist-hpc'; main()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "sweep",
            "submit",
            str(path),
            "--cluster",
            "local",
            "--parallel",
            "3",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --array=0-2%3" in proc.stdout
    assert re.search(r"PACKAGES=\(.*'?optuna'?", proc.stdout), proc.stdout


def test_a_grid_study_covers_its_grid_through_ask_and_tell(tmp_path):
    from mnist_hpc.experiments import search

    text = (
        STUDY.format(n=4)
        .replace("sampler: tpe", "sampler: grid")
        .replace("{float: [1.0e-5, 0.1], log: true}", "{categorical: [0.001, 0.01]}")
        .replace("int: [16, 64]", "int: [16, 32]")
    )
    sweep = load_sweep(_write(tmp_path, text))
    space = search.Space(sweep.study)
    study = search.open_study(sweep, worker_seed=0)
    seen = set()
    for _ in range(4):  # what a worker does, without the training
        trial = study.ask(space.distributions)
        seen.add(tuple(space.values(trial.params).items()))
        study.tell(trial, 0.5)
    assert len(seen) == 4  # every point once, and the last tell does not raise
    with pytest.raises(ConfigError, match=r"n_trials: 5 trials, but the grid has 4 points"):
        load_sweep(_write(tmp_path, text.replace("n_trials: 4", "n_trials: 5")))


def test_each_metric_s_value_and_what_epochs_report(tmp_path):
    from mnist_hpc.experiments.search import intermediate, objective
    from mnist_hpc.runs.folder import MetricsRow, read_metrics_csv, write_metrics_csv
    from mnist_hpc.runs.summary import RunSummary

    write_metrics_csv(
        tmp_path / "metrics.csv",
        [
            {
                "epoch": 1,
                "train_loss": 1.0,
                "train_acc": 0.5,
                "val_loss": 0.40,
                "val_acc": 0.90,
                "lr": 0.1,
                "seconds": 2.0,
                "images_per_s": 1.0,
            },
            {
                "epoch": 2,
                "train_loss": 0.5,
                "train_acc": 0.8,
                "val_loss": 0.30,
                "val_acc": 0.97,
                "lr": 0.1,
                "seconds": 3.0,
                "images_per_s": 1.0,
            },
            {
                "epoch": 3,
                "train_loss": 0.4,
                "train_acc": 0.9,
                "val_loss": 0.35,
                "val_acc": 0.96,
                "lr": 0.1,
                "seconds": 4.0,
                "images_per_s": 1.0,
            },
        ],
    )
    rows = read_metrics_csv(tmp_path)
    assert isinstance(rows[0], MetricsRow)
    summary = RunSummary(test_accuracy=0.955, best_val_accuracy=0.97)

    def spec(extra):
        text = STUDY.format(n=4).replace("metric: val_acc\n", extra)
        return load_sweep(_write(tmp_path, text), validate=False).study

    acc, test, loss = spec("metric: val_acc\n"), spec("metric: test_acc\n"), spec("metric: val_loss\n")
    reach, never = (
        spec("metric: time_to_target\ntarget: 0.95\n"),
        spec("metric: time_to_target\ntarget: 0.99\n"),
    )
    assert (acc.direction, loss.direction, reach.direction) == ("maximize", "minimize", "minimize")
    assert objective(acc, summary, rows) == 0.97 and objective(test, summary, rows) == 0.955
    assert objective(loss, summary, rows) == 0.30
    assert objective(reach, summary, rows) == 5.0 and objective(never, summary, rows) == float("inf")
    assert [intermediate(s, rows[1]) for s in (acc, test, loss)] == [0.97, 0.97, 0.30]
    assert intermediate(reach, rows[1]) == pytest.approx(0.03)  # the error rate: lower is better, as time


def test_trials_failing_in_a_row_stop_the_workers_with_one_line(tmp_path):
    path = make_study(tmp_path, 8)
    empty = tmp_path / "bad-data"  # every trial fails at once: the dataset's download is damaged
    (empty / "MNIST" / "raw").mkdir(parents=True)
    (empty / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")
    proc = cli("sweep", "run", path, data=empty, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "3 trials in a row failed, the last with: error:" in line and "fix the cause" in line
    assert [t.state.name for t in trials_of(tmp_path / "runs" / "sweeps" / "study")] == ["FAIL"] * 3
