"""`mnist-hpc evaluate`, `predict` and `export` are faces over ``mnist_hpc.evaluate``,
``mnist_hpc.predict`` and ``mnist_hpc.export``: what each command prints is what the Python API
returns (for one run, several and their ensemble; a good image and a bad one; the same exported
file and card), from a run folder, a checkpoint or an exported file, and the ``Run`` methods
agree with both."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import mnist_hpc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root):
    """Two tiny runs (one epoch each, other seeds) on the synthetic data."""
    top = tmp_path_factory.mktemp("parity")
    runs = []
    for seed in (0, 1):
        cfg = mnist_hpc.load_config(
            "quickstart",
            [
                f"experiment.output_dir={top / 'runs'}",
                f"experiment.name=parity{seed}",
                f"experiment.seed={seed}",
                "model.name=mlp",
                "model.hidden=[16]",
                "train.epochs=1",
                "data.val_split=0.2",
                "runtime.threads=1",
            ],
        )
        runs.append(mnist_hpc.train(cfg, data_dir=synth_root, progress=False, echo=lambda m: None))
    return runs


def _line(r: dict) -> str:
    return f"test accuracy {r['test_accuracy'] * 100:.2f}%  loss {r['test_loss']:.4f}  {r['checkpoint']}"


def test_evaluate_prints_what_the_api_returns(trained, synth_root, cli):
    run = trained[0]
    r = cli("evaluate", run.path, "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(run, data_dir=synth_root, device="cpu")
    assert found.ensemble is None or found.ensemble["members"] == 1
    assert r.out.splitlines() == [_line(found.results[0])]
    assert run.evaluate(data_dir=synth_root, device="cpu") == found.results[0]


def test_an_ensemble_prints_what_the_api_returns(trained, synth_root, cli):
    paths = [run.path for run in trained]
    r = cli("evaluate", *paths, "--ensemble", "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(trained, data_dir=synth_root, device="cpu")
    ens = found.ensemble
    assert ens is not None and ens["members"] == 2
    assert r.out.splitlines() == [
        *map(_line, found.results),
        f"ensemble of 2: test accuracy {ens['test_accuracy'] * 100:.2f}%  loss {ens['test_loss']:.4f}",
    ]


def test_a_bad_device_is_named_as_each_caller_spells_it(trained, synth_root, cli):
    r = cli("evaluate", trained[0].path, "--device", "gpu0")
    assert r.code != 0 and r.err.strip().splitlines()[-1].startswith("error: --device='gpu0': not a device")
    with pytest.raises(mnist_hpc.errors.UserError, match=r"^device='gpu0': not a device"):
        mnist_hpc.evaluate(trained[0], data_dir=synth_root, device="gpu0")


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A digit the MNIST way (84×84, white on black) and a blank image (nothing to classify)."""
    from PIL import Image

    from tests.conftest import synthetic_split

    folder = tmp_path_factory.mktemp("parity-images")
    x, _ = synthetic_split(1, 2)
    good, blank = folder / "good.png", folder / "blank.png"
    Image.fromarray(x[0]).resize((84, 84)).save(good)
    Image.new("L", (50, 50), 255).save(blank)
    return good, blank


def _shown(p) -> str:
    """The line `mnist-hpc predict` prints for a Prediction, from its fields."""
    if p.error is not None:
        return f"error: {p.error}"
    return f"{p.source}: " + "  ".join(f"{name} {prob * 100:.1f}%" for name, prob in p.top)


def test_predict_prints_what_the_api_returns(trained, images, cli):
    run, (good, blank) = trained[0], images
    r = cli("predict", run.path, good, blank)
    assert r.code == 1, r.err  # one image failed
    found = mnist_hpc.predict(run.path, [str(good), str(blank)], errors="skip")
    assert [p.source for p in found] == [str(good), str(blank)]
    assert found[0].label is not None and found[0].label == found[0].top[0][0] and len(found[0].top) == 3
    assert found[1].label is None and found[1].error.startswith(f"{blank}: ")
    assert r.out.splitlines() == [_shown(found[0])]
    assert r.err.splitlines() == [_shown(found[1])]
    assert run.predict([good, blank], errors="skip") == found
    assert mnist_hpc.predict(run, [good, blank], errors="skip") == found
    with pytest.raises(mnist_hpc.errors.UserError, match="blank"):  # errors="raise", the default
        mnist_hpc.predict(run.path, [good, blank])


def test_predict_from_a_checkpoint_prints_what_the_api_returns(trained, images, cli):
    checkpoint, (good, _) = trained[0].checkpoint(), images
    r = cli("predict", checkpoint, good)
    assert r.code == 0 and r.err == "", r.err
    found = mnist_hpc.predict(checkpoint, [good])
    assert r.out.splitlines() == [_shown(found[0])]
    assert found == trained[0].predict([good])  # the best checkpoint is the run's own model


def test_a_source_without_a_model_is_one_line_for_both(trained, images, cli, tmp_path):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    good, blank = images
    for imgs in ([good], [blank]):  # even when no image is good, the missing model is the error
        r = cli("predict", empty, *imgs)
        assert r.code == 1 and r.out == ""
        with pytest.raises(mnist_hpc.errors.UserError) as e:
            mnist_hpc.predict(empty, imgs, errors="skip")
        assert r.err.splitlines() == [f"error: {e.value}"]


# --------------------------------------------------------------------------- export


def _export_lines(done) -> list[str]:
    size = done.path.stat().st_size
    return [
        f"exported {done.checkpoint} as {done.format}: {done.path} ({size / 1e3:,.1f} kB)",
        f"model card: {done.card}",
    ]


def _card(path) -> dict:
    card = json.loads(path.read_text())
    card.pop("exported_at")
    return card


def test_export_prints_what_the_api_returns(trained, images, cli, tmp_path):
    run = trained[0]
    r = cli("export", run.path, "--format", "state_dict", "--out", tmp_path / "cli.pt")
    assert r.code == 0, r.err
    by_cli = _card(tmp_path / "cli.pt.card.json")
    done = mnist_hpc.export(run.path, "state_dict", out=tmp_path / "cli.pt")  # the same file again
    assert (done.path, done.card, done.format) == (
        tmp_path / "cli.pt",
        tmp_path / "cli.pt.card.json",
        "state_dict",
    )
    assert done.checkpoint == run.checkpoint()
    assert r.out.splitlines() == _export_lines(done)
    assert _card(done.card) == by_cli  # the same card (but for the time it was written)
    assert run.export("state_dict", tmp_path / "cli.pt") == done.path
    assert _card(done.card) == by_cli


def test_export_of_a_checkpoint_to_the_run_and_predict_from_it(trained, images, cli):
    run, (good, _) = trained[1], images
    r = cli("export", run.checkpoint(), "--format", "torchscript")
    assert r.code == 0, r.err
    done = mnist_hpc.export(run.checkpoint(), "torchscript")
    assert done.path.parent == run.path / "exports" and done.checkpoint == run.checkpoint()
    assert r.out.splitlines()[1:] == _export_lines(done)[1:]  # a TorchScript file's size varies a little
    assert r.out.splitlines()[0].startswith(f"exported {done.checkpoint} as torchscript: {done.path} (")
    assert mnist_hpc.export(run, "torchscript").path == done.path  # a Run is its folder
    p = cli("predict", done.path, good)  # the exported file: the same classes, the same lines
    assert p.code == 0, p.err
    found = mnist_hpc.predict(done.path, [good])
    assert p.out.splitlines() == [_shown(found[0])]
    assert found[0].label == run.predict([good])[0].label


def test_an_export_mistake_is_the_same_line_for_both(trained, cli):
    run = trained[0]
    r = cli("export", run.path, "--format", "onnxx")
    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.export(run.path, "onnxx")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_predict_and_export_are_the_api_functions_not_modules():
    """``mnist_hpc.export`` is the function: no ``mnist_hpc/export.py`` or package shadows it,
    and importing the modules named export (CLI, writer) leaves it in place."""
    import mnist_hpc.cli.export
    import mnist_hpc.training.export

    assert "mnist_hpc.export" not in sys.modules and "mnist_hpc.predict" not in sys.modules
    assert mnist_hpc.export is mnist_hpc.api.export and mnist_hpc.predict is mnist_hpc.api.predict
    assert {"predict", "export"} <= set(dir(mnist_hpc)) and {"predict", "export"} <= set(mnist_hpc.__all__)


# --------------------------------------------------------------------------- the cluster commands
# `submit`, `sweep submit`, `estimate`, `status`, `logs`, `preempt` and `data pack` print what
# mnist_hpc.submit / sweep_submit / estimate / jobs_status / log_file / preempt / pack_data return.
# Dry runs and fake Slurm commands on PATH: no scheduler needed.

SWEEP = "base: quickstart\nset: {train.epochs: 2}\ngrid: {optim.lr: [0.1, 0.2, 0.3, 0.4, 0.5]}\n"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A project folder with a sweep file, probes stored in its own cache (10 ms a step)."""
    from mnist_hpc import api_cluster
    from mnist_hpc.cluster import estimate as est

    probe = est.Probe(0.010, "cpu (test)", "given")
    monkeypatch.setattr(api_cluster, "_probe", lambda cfg: probe)
    monkeypatch.setattr(est, "stored_probe", lambda cfg: probe)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    monkeypatch.delenv("SLURM_ACCOUNT", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path


def _dry_run_folder(err: str) -> str:
    """The run (or sweep) folder a dry run names: the path after 'the job would run in'."""
    return next(line for line in err.splitlines() if "would run in" in line).rsplit(" ", 1)[1]


def test_submit_prints_the_script_and_estimate_the_api_returns(here, cli):
    args = ["--cluster", "narval", "--account", "def-x", "--gpus", "a100:2", "--time", "0:30:00"]
    r = cli("submit", "quickstart", *args, "--set", "train.epochs=2", "--mail", "a@b.c", "--dry-run")
    assert r.code == 0, r.err
    job = mnist_hpc.submit(
        "quickstart",
        "narval",
        overrides=["train.epochs=2"],
        account="def-x",
        gpus="a100:2",
        time="0:30:00",
        mail="a@b.c",
        dry_run=True,
    )
    assert job.job_id is None and job.cluster == "narval"
    # each call makes its own run folder's name (by the second); the scripts are the same but for it
    assert r.out.replace(_dry_run_folder(r.err), "RUN") == job.script.replace(str(job.run_dir), "RUN")
    e = mnist_hpc.estimate(
        "quickstart", "narval", gpus="a100:2", time="0:30:00", overrides=["train.epochs=2"]
    )
    assert e is not None and e.lines and all(f"{line}\n" in r.err for line in e.lines)
    assert "2 x a100" in e.lines[0]


def test_a_submit_mistake_is_the_same_line_for_both(here, cli):
    from mnist_hpc.errors import UserError

    for args, kwargs in (
        (["--cluster", "narval", "--time", "99x"], {"account": "def-x", "time": "99x"}),
        (["--cluster", "narval"], {}),  # no account
        (["--cluster", "nowhere"], {"account": "def-x"}),
        (["--cluster", "narval", "--after", "x1"], {"account": "def-x", "after": "x1"}),
    ):
        cli_args = [*args, *(["--account", "def-x"] if "account" in kwargs else [])]
        r = cli("submit", "quickstart", *cli_args, "--dry-run")
        with pytest.raises(UserError) as e:
            mnist_hpc.submit("quickstart", args[1], dry_run=True, **kwargs)
        assert r.code == 1 and r.err.splitlines()[-1] == f"error: {str(e.value).splitlines()[-1]}", (args, r)


def test_sweep_submit_prints_what_the_api_returns(here, cli):
    args = ["--cluster", "narval", "--account", "def-x", "--pack", "2", "--then", "report", "--parallel", "2"]
    r = cli("sweep", "submit", "sweep.yaml", *args, "--dry-run")
    assert r.code == 0, r.err
    notes: list[str] = []
    out = mnist_hpc.sweep_submit(
        "sweep.yaml",
        "narval",
        account="def-x",
        pack=2,
        then="report",
        parallel=2,
        dry_run=True,
        note=notes.append,
    )
    assert (out.runs, out.pack, out.tasks, out.job_ids) == (5, 2, 3, [None])
    assert out.report_job is not None
    scripts = "".join(j.script for j in [*out.jobs, out.report_job])
    assert r.out.count("#!/bin/bash") == scripts.count("#!/bin/bash") == 2
    stamp = re.compile(r"-sweep-\d{8}-\d{6}")  # each call makes its sweep folder's name (by the second)
    assert stamp.sub("-sweep-T", r.out) == stamp.sub("-sweep-T", scripts)
    assert r.err.splitlines()[-1] == "dry run: nothing submitted; 5 runs (3 tasks of 2) in 1 job array(s)"
    assert all(line in r.err.splitlines() for line in out.notes + notes)


def test_pack_auto_is_the_same_number_for_both(here, cli):
    r = cli(
        "sweep", "submit", "sweep.yaml", "--cluster", "narval", "--account", "def-x", "--pack", "auto",
        "--task-time", "0:05:00", "--dry-run",
    )  # fmt: skip
    assert r.code == 0, r.err
    notes: list[str] = []
    out = mnist_hpc.sweep_submit(
        "sweep.yaml",
        "narval",
        account="def-x",
        pack="auto",
        task_time="0:05:00",
        dry_run=True,
        note=notes.append,
    )
    tasks = f"{out.tasks} task{'s' if out.tasks != 1 else ''}"
    assert out.pack > 1 and f"({tasks} of {out.pack})" in r.err.splitlines()[-1]
    assert notes[0] in r.err.splitlines()  # why that many
    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.sweep_submit("sweep.yaml", "narval", account="def-x", pack="zero", dry_run=True)
    r = cli("sweep", "submit", "sweep.yaml", "--cluster", "narval", "--account", "def-x", "--pack", "zero")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_estimate_prints_what_the_api_returns(here, cli):
    r = cli(
        "estimate",
        "sweep.yaml",
        "--cluster",
        "nibi",
        "--gpus",
        "h100_1g.10gb:1",
        "--pack",
        "3",
        "--time",
        "0:01:00",
    )
    assert r.code == 0, r.err
    warned: list[str] = []
    e = mnist_hpc.estimate(
        "sweep.yaml", "nibi", gpus="h100_1g.10gb:1", pack=3, time="0:01:00", warn=warned.append
    )
    assert e is not None and r.out.splitlines() == e.lines
    assert e.warnings and r.err.splitlines() == [f"warning: {w}" for w in e.warnings] and warned == []
    assert e.rgu_hours is not None and "1.74 RGU per" in r.out
    assert (
        mnist_hpc.estimate("sweep.yaml", "nibi", gpus="h100_1g.10gb:1", pack=3, stored_only=True).lines[1:]
        == (e.lines[1:])
    )
    with pytest.raises(mnist_hpc.errors.UserError) as err:
        mnist_hpc.estimate("quickstart", "narval", gpus="a100_9g.5gb:1")
    r = cli("estimate", "quickstart", "--cluster", "narval", "--gpus", "a100_9g.5gb:1")
    assert r.code == 1 and r.err.splitlines() == [f"error: {err.value}"]


def test_status_logs_and_preempt_print_what_the_api_returns(project, cli):
    from tests.status_fakes import DISABLED, _run, fake

    fake(project, "squeue", 'echo "13|mnist|RUNNING|0:12|0:30:00|1|node1"\n')
    fake(project, "sacct", f'echo "{DISABLED}" >&2; exit 1\n')
    fake(
        project,
        "scontrol",
        'case "$1" in show) echo "JobId=13 JobName=mnist JobState=RUNNING";; *) exit 1;; esac\n',
    )
    run = _run(project, "quickstart-job13")
    (run / "slurm-13.out").write_text("epoch 1/2\nepoch 2/2 \u2713\n")
    (run / "job.sh").write_text("#!/bin/bash\n#SBATCH --signal=B:USR1@90\n")
    (run / "job.json").write_text(
        json.dumps({"job_id": "13", "script": str(run / "job.sh"), "output": str(run / "slurm-%j.out")})
    )

    r = cli("status")
    assert r.code == 0, r.err
    now = mnist_hpc.jobs_status()
    assert [q.job.job_id for q in now.queued] == ["13"] and Path(now.queued[0].folder).name == run.name
    row = next(line for line in r.out.splitlines() if line.startswith("13 "))
    assert row.split()[:3] == ["13", "mnist", "RUNNING"] and row.endswith(f"runs/{run.name}")

    r = cli("logs", "13")
    assert r.code == 0 and r.out == mnist_hpc.log_file("13").read_text() == "epoch 1/2\nepoch 2/2 \u2713\n"
    assert mnist_hpc.log_file("13").resolve() == (run / "slurm-13.out").resolve()

    r = cli("preempt", "13", "--dry-run")
    assert r.code == 0, r.err
    sent = mnist_hpc.preempt("13", dry_run=True)
    assert (sent.signal, sent.batch) == ("USR1", True)
    assert r.out.splitlines() == [" ".join(sent.argv)]

    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.cancel("not-a-job")
    r = cli("cancel", "not-a-job")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_data_pack_prints_what_the_api_returns(tmp_path, monkeypatch, cli):
    from mnist_hpc.cluster import datapack

    root = tmp_path / "datasets"  # the four .gz files of MNIST (contents do not matter for packing)
    for f in datapack.dataset_files(root, "mnist"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"fake " + f.name.encode())
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    r = cli("data", "pack")  # the default archive
    assert r.code == 0, r.err
    first = (tmp_path / "data" / "mnist-hpc-data.tar").read_bytes()
    done = mnist_hpc.pack_data()
    assert done.path == datapack.DEFAULT_ARCHIVE and done.datasets == ["mnist"]
    assert r.out.splitlines() == [str(done)] and done.data_dir_from == "$MNIST_HPC_DATA_DIR"
    assert done.path.read_bytes() == first  # the same archive
    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.pack_data(["nosuchset"], output="other.tar")
    r = cli("data", "pack", "nosuchset", "-o", "other.tar")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_the_cluster_functions_are_the_api():
    from mnist_hpc.cluster import queue

    names = {"sweep_submit", "estimate", "jobs_status", "log_file", "cancel", "preempt", "setup_cluster"}
    names |= {"push", "pack_data", "watch_jobs_status", "follow_log"}
    assert names <= set(mnist_hpc.__all__) and names <= set(mnist_hpc.api.__all__)
    assert all(getattr(mnist_hpc, n) is getattr(mnist_hpc.api, n) for n in names)
    assert mnist_hpc.STATUS_EVERY == queue.ASK_EVERY


# --------------------------------------------------------------------------- many runs


def _printed(lines) -> str:
    """What the commands print for lines echoed one by one."""
    return "".join(f"{line}\n" for line in lines)


def _as_printed(text: str) -> str:
    """What `mnist-hpc report` prints of a rendered text: a last newline added where it has none."""
    return text + ("" if text.endswith("\n") else "\n")


@pytest.fixture
def damaged_too(lr_sweep):
    """The learning-rate runs and one with a damaged summary.json (left out, named in a note)."""
    from tests.run_fakes import make_run

    bad = make_run(lr_sweep / "lr=0.5", 0.5, lr=0.5)
    (bad / "summary.json").write_text("[1, 2")
    return lr_sweep


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_report_prints_what_the_api_renders(damaged_too, cli, monkeypatch, fmt):
    monkeypatch.setenv("COLUMNS", "100")
    r = cli("report", damaged_too, "--format", fmt)
    assert r.code == 0, r.err
    comp = mnist_hpc.report(damaged_too)
    assert r.out == _as_printed(comp.render(fmt).text)
    assert comp.notes and r.err.splitlines() == [f"note: {n}" for n in comp.notes]
    assert comp.title() == "Run comparison: learning_rate"  # from the folder given, as the command's


def test_report_html_is_the_page_to_html_writes(damaged_too, cli, tmp_path):
    r = cli("report", damaged_too, "--html", "--out", tmp_path / "cli.html", "--title", "LR")
    assert r.code == 0 and r.err.splitlines()[-1] == f"wrote {tmp_path / 'cli.html'}"
    page = mnist_hpc.report(damaged_too, title="LR").to_html(tmp_path / "api.html")
    assert page.read_bytes() == (tmp_path / "cli.html").read_bytes()
    r = cli("report", damaged_too, "--html")  # without --out: report.html in the first folder
    assert r.err.splitlines()[-1] == f"wrote {mnist_hpc.report(damaged_too).html_path()}"


def test_report_of_a_sweep_file_is_the_report_of_its_folder(tmp_path, fake_train, cli):
    from tests.sweep_fakes import write_sweep

    path = write_sweep(tmp_path, "grid: {optim.lr: [0.1, 0.05]}\n")
    mnist_hpc.sweep(path, echo=lambda m: None)
    folder = mnist_hpc.sweep_status(path).output_dir
    assert mnist_hpc.report(path).rows == mnist_hpc.report(folder).rows
    r = cli("report", path, "--format", "csv")
    assert r.code == 0 and r.out == _as_printed(mnist_hpc.report(path).render("csv").text)


def test_runs_prints_what_list_runs_returns(damaged_too, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "100")
    top = damaged_too.parent
    r = cli("runs", top)
    assert r.code == 0, r.err
    found = mnist_hpc.list_runs(top)
    assert len(found) == 5 and [run.path for run in found] == [row.path for row in found.rows]
    assert r.out == found.to_table() + "\n"
    assert found.damaged and r.err.splitlines() == [f"note: skipped {d}" for d in found.damaged]
    r = cli("runs", tmp_path / "nosuch")
    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.list_runs(tmp_path / "nosuch")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_sweep_commands_print_what_the_api_returns(tmp_path, fake_train, cli, monkeypatch):
    from tests.sweep_fakes import write_sweep

    monkeypatch.setenv("COLUMNS", "100")
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.1, 0.05]}\n")
    r = cli("sweep", "plan", path)
    assert r.code == 0 and r.out == _printed(mnist_hpc.sweep_plan(path).lines())
    status = mnist_hpc.sweep_status(path)
    assert status.counts() == {"pending": 2} and cli("sweep", "status", path).out == status.to_text() + "\n"

    echoed: list = []
    one = mnist_hpc.sweep(path, index=1, echo=echoed.append)  # an array task: run 1 only, no comparison
    assert [run.path.name for run in one] == ["lr=0.05"] and one.exit_code == 0 and one.after == []
    assert echoed[0] == f"sweep s: 1 run into {status.output_dir}/"
    r = cli("sweep", "run", path)
    assert r.code == 0, r.err
    echoed.clear()
    done = mnist_hpc.sweep(path, echo=echoed.append)  # both completed now: skipped, then compared
    again = cli("sweep", "run", path)
    assert again.code == 0 and again.out == _printed(echoed + done.after)
    assert [run.path.name for run in done] == ["lr=0.1", "lr=0.05"] and done.problems == []

    status = mnist_hpc.sweep_status(path)
    assert [s.state for s in status.states] == ["completed", "completed"]
    assert cli("sweep", "status", path).out == status.to_text() + "\n"

    r = cli("sweep", "report", path, "--out", tmp_path / "cli.html")
    assert r.code == 0 and r.err == f"wrote {tmp_path / 'cli.html'}\n"
    written = mnist_hpc.sweep_report(path, out=tmp_path / "api.html")
    assert written.path.read_bytes() == (tmp_path / "cli.html").read_bytes()
    assert written.comparison.title() == "Sweep s"


def test_a_bad_sweep_index_is_the_same_line_for_both(tmp_path, fake_train, cli):
    from tests.sweep_fakes import write_sweep

    path = write_sweep(tmp_path, "grid: {optim.lr: [0.1, 0.05]}\n")
    r = cli("sweep", "run", path, "--index", "5")
    with pytest.raises(mnist_hpc.errors.ConfigError) as e:
        mnist_hpc.sweep(path, index=5)
    assert r.code == 2 and r.err.splitlines() == [f"error: {e.value}"]


def test_sync_prints_what_the_api_does(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    for target in (tmp_path / "nosuch", run):  # no folder; a folder without an offline W&B run
        r = cli("sync", target)
        with pytest.raises(mnist_hpc.errors.UserError) as e:
            mnist_hpc.sync(target)
        assert r.code == 1 and r.out == "" and r.err.splitlines() == [f"error: {e.value}"]
    pytest.importorskip("wandb")
    offline = run / "wandb" / "offline-run-20260101_000000-abc123"
    offline.mkdir(parents=True)
    (offline / "run-abc123.wandb").write_bytes(b"")
    echoed: list = []
    assert mnist_hpc.sync(run, dry_run=True, echo=echoed.append) == [0]  # nothing uploaded
    assert echoed == [f"{run}: wandb sync --dry-run {offline}"]
    r = cli("sync", run, "--dry-run")
    assert r.code == 0 and r.out == _printed(echoed)


def test_the_many_runs_functions_are_public():
    names = {"sweep_plan", "sweep_status", "sweep_report", "sync", "RunList", "SweepResult"}
    assert names <= set(mnist_hpc.__all__) and names <= set(dir(mnist_hpc))
    assert names <= set(mnist_hpc.api.__all__) and mnist_hpc.sync is mnist_hpc.api.sync


# --------------------------------------------------------------------------- before training


def test_configs_models_and_datasets_list_what_the_api_lists(cli):
    shipped = mnist_hpc.list_configs()
    assert "quickstart" in shipped.configs and (shipped.folder / "quickstart.yaml").is_file()
    assert cli("configs").out == _printed(shipped.lines())
    found = mnist_hpc.list_models()
    assert found.torchvision is None and {"mlp", "fast", "custom", "torchvision"} <= {
        m.name for m in found.models
    }
    assert next(m for m in found.models if m.name == "mlp").params == 101_770
    assert cli("models").out == _printed(found.lines())
    known = mnist_hpc.list_datasets()
    assert known.names[:2] == ["mnist", "fashion-mnist"] and cli("data", "list").out == _printed(
        known.lines()
    )


def test_config_validate_prints_each_check(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("model: {name: [oops\n")
    Path("badkey.yaml").write_text("experiment: {name: x}\nnosuchkey: 1\n")
    Path("sweep.yaml").write_text("base: quickstart\ngrid: {optim.lr: [0.1, 0.01]}\n")
    files = ["quickstart", "sweep.yaml", "bad.yaml", "badkey.yaml", "nosuchconfig"]
    checks = [mnist_hpc.check_config(f) for f in files]
    assert [c.ok for c in checks] == [True, True, False, False, False]
    assert checks[1].runs == 2 and str(checks[1]) == "ok    sweep.yaml (2 runs)"
    assert checks[0].model == "fast" and checks[0].params is None  # a built-in: counted without torch
    with pytest.raises(mnist_hpc.errors.ConfigError) as e:
        mnist_hpc.load_config("badkey.yaml")
    assert checks[3].error == str(e.value)
    r = cli("config", "validate", *files)
    assert r.code == 2
    assert r.out == _printed(str(c) for c in checks if c.ok)
    assert r.err == _printed(str(c) for c in checks if not c.ok)
    assert cli("config", "validate", "quickstart", "sweep.yaml").code == 0


def test_a_custom_model_is_built_and_counted_for_both(cli):
    own = Path(mnist_hpc.list_configs().folder) / "own.yaml"
    check = mnist_hpc.check_config(own)
    assert check.ok and check.model == "custom" and check.params == 29_178
    r = cli("config", "validate", own)
    assert r.code == 0 and r.out == f"{check}\n" == f"ok    {own} (custom model: 29,178 parameters)\n"


def test_summary_prints_model_summary(cli):
    sets = ["model.name=mlp", "model.hidden=[16]"]
    shown = mnist_hpc.model_summary("quickstart", sets)
    assert shown.params == 784 * 16 + 16 + 16 * 10 + 10 and shown.title == "mlp (quickstart-mlp)"
    r = cli("summary", "quickstart", *[a for s in sets for a in ("--set", s)])
    assert r.code == 0 and r.out == shown.text + "\n"
    cfg = mnist_hpc.load_config("quickstart", sets)
    assert mnist_hpc.model_summary(cfg).text == shown.text  # a Config as well as a source
    cfg.model.hidden = [10**9]  # changed after loading: checked again, as train() checks it
    with pytest.raises(mnist_hpc.errors.ConfigError, match="MAX_PARAMS"):
        mnist_hpc.model_summary(cfg)


def test_data_verify_and_download_print_what_the_api_returns(cli, synth_root, tmp_path):
    echoed: list = []
    found = mnist_hpc.verify_data(data_dir=synth_root, echo=echoed.append)
    assert found.ok and found.problem is None and found.data_dir_from == "--data-dir"
    assert {f.dataset for f in found.files} == {"mnist", "fashion-mnist"} and all(f.ok for f in found.files)
    assert echoed == list(found.lines())
    r = cli("data", "verify", "--data-dir", synth_root)
    assert r.code == 0 and r.out == _printed(echoed) and r.err == ""

    empty = tmp_path / "empty"
    missing = mnist_hpc.verify_data(["kmnist"], data_dir=empty)
    assert not missing.ok and not any(f.ok for f in missing.files)
    r = cli("data", "verify", "--dataset", "kmnist", "--data-dir", empty)
    assert r.code == 1 and r.out == _printed(missing.lines()) and r.err == f"error: {missing.problem}\n"

    ready = mnist_hpc.prepare_data(["mnist"], data_dir=synth_root)
    assert [(d.name, d.already) for d in ready] == [("mnist", True)]
    r = cli("data", "download", "--dataset", "mnist", "--data-dir", synth_root)
    assert r.code == 0 and r.out == _printed(map(str, ready))


def test_a_dataset_mistake_is_the_same_message_for_both(cli, tmp_path, monkeypatch):
    with pytest.raises(mnist_hpc.errors.ConfigError) as e:
        mnist_hpc.verify_data(["mnistt"])
    assert str(e.value).startswith("unknown dataset 'mnistt' (did you mean 'mnist'?); expected one of mnist,")
    r = cli("data", "verify", "--dataset", "mnistt")
    assert r.code == 2 and r.err.splitlines()[-1] == f"Error: Invalid value for '--dataset': {e.value}"
    with pytest.raises(mnist_hpc.errors.ConfigError, match="unknown dataset 'mnistt'"):
        mnist_hpc.prepare_data("mnistt")
    monkeypatch.setenv("SLURM_JOB_ID", "123")  # inside a job: no download, only local archives
    with pytest.raises(mnist_hpc.errors.DataError) as e:
        mnist_hpc.prepare_data(["kmnist"], data_dir=tmp_path / "none")
    r = cli("data", "download", "--dataset", "kmnist", "--data-dir", tmp_path / "none")
    assert r.code == 1 and r.err == f"error: {e.value}\n" and "no internet" in r.err


def test_models_download_prints_what_download_weights_returns(cli, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from mnist_hpc.training.models import hub_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    path, _ = hub_weights_path("resnet18", "DEFAULT")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # already in the cache: nothing is downloaded
    got = mnist_hpc.download_weights("resnet18")
    assert (got.path, got.downloaded) == (path, False)
    r = cli("models", "download", "resnet18")
    assert r.code == 0 and r.out == f"{got}\n" == f"already there: resnet18 DEFAULT -> {path}\n"
    with pytest.raises(mnist_hpc.errors.ConfigError) as e:
        mnist_hpc.download_weights("resnet1")
    r = cli("models", "download", "resnet1")
    assert r.code == 2 and r.err == f"error: {e.value}\n" and "did you mean 'resnet18'" in r.err


def test_the_setup_functions_are_the_api():
    names = {"list_configs", "check_config", "list_models", "download_weights", "model_summary"}
    names |= {"list_datasets", "prepare_data", "verify_data", "ConfigCheck", "DataCheck"}
    assert names <= set(mnist_hpc.__all__) and names <= set(mnist_hpc.api.__all__)
    assert all(getattr(mnist_hpc, n) is getattr(mnist_hpc.api, n) for n in names)


def test_the_main_commands_import_only_the_api():
    """cli/main.py reaches the library through ``mnist_hpc.api`` alone (besides the errors, the
    completions, the process's clock and its signal flag, which train and main() own)."""
    from tests.test_imports import import_graph

    allowed = {"mnist_hpc.api", "mnist_hpc.errors", "mnist_hpc.clock", "mnist_hpc.training.stopflag"}
    allowed |= {f"mnist_hpc.cli.{m}" for m in ("completion", "cluster", "export", "bench", "experiments")}
    assert import_graph()["mnist_hpc.cli.main"] <= allowed


def test_every_command_module_reaches_the_library_through_the_api():
    """Every module of cli/ (the cluster, sweep and export commands, the shell completions, the
    hidden commands the jobs run) imports ``mnist_hpc.api`` and the errors only; main also the
    process's clock and signal flag."""
    from tests.test_imports import import_graph

    graph = import_graph()
    modules = [m for m in graph if m.startswith("mnist_hpc.cli.")]
    assert len(modules) >= 6, modules
    for module in modules:
        outside = {m for m in graph[module] if not m.startswith("mnist_hpc.cli")}
        allowed = {"mnist_hpc.api", "mnist_hpc.errors"}
        if module == "mnist_hpc.cli.main":
            allowed |= {"mnist_hpc.clock", "mnist_hpc.training.stopflag"}
        assert outside <= allowed, (module, outside - allowed)
