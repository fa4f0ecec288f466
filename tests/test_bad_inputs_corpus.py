"""A corpus of hostile and mistaken inputs (issue 10): sweep files, predict images and
checkpoints, data folders, run folders and resume, a full disk, cluster profile files and
signals. Each case must end in one short message (no traceback), a non-zero exit where refusing
is right, and leave every file that existed before as it was (hashed before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import make_dataset, synthetic_split

MAX_MESSAGE = 600  # characters (with the test's folder as "T"): one line a person reads


# --------------------------------------------------------------------------- the harness


@dataclass
class Env:
    tmp: Path
    data: Path  # synthetic MNIST
    config: Path  # the tiny config
    done: Path  # a completed 2-epoch run (a fresh copy per case)
    cli: object
    before: dict = None  # {file: sha1} when the hostile input is handed over

    def mark(self):
        """The set-up is done: from here on, no file that exists may be lost or rewritten."""
        self.before = hashes(self.tmp)

    def run(self, *args):
        """The CLI in-process; the result knows the case's folder (to measure messages without it)."""
        r = self.cli(*args)
        r.tmp = self.tmp
        return r

    def train(self, *args):
        return self.run("train", self.config, "--data-dir", self.data, *args)

    def write(self, name: str, text: str) -> Path:
        p = self.tmp / name
        p.write_text(textwrap.dedent(text))
        return p


def hashes(root: Path) -> dict:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(r, code=None, *needles):
    """A refusal: non-zero exit (``code`` when given), one short line on stderr naming ``needles``."""
    assert r.code != 0 and (code is None or r.code == code), r
    assert "Traceback" not in r.err + r.out, r
    lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r
    assert len(lines[0].replace(str(r.tmp), "T")) <= MAX_MESSAGE, lines[0]  # pytest's paths are long
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    if os.environ.get("HOSTILE_SHOW"):  # to read the messages: HOSTILE_SHOW=1 pytest -s ...
        print(f"\n[exit {r.code}] {lines[0]}")
    return lines[0]


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One trained run, copied into each case."""
    from mnist_hpc.cli.main import main

    root = tmp_path_factory.mktemp("hostile")
    data = make_dataset(root / "data")
    config = root / "tiny.yaml"
    config.write_text(f"""
experiment: {{name: tiny, seed: 0, output_dir: {root / "unused"}}}
data: {{dataset: mnist, val_split: 0.2, batch_size: 64, eval_batch_size: 256}}
model: {{name: mlp, hidden: [32]}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 2}}
runtime: {{threads: 1}}
""")
    try:
        main(["train", str(config), "--data-dir", str(data), "--run-dir", str(root / "done")])
    except SystemExit as e:
        assert not e.code
    return root


@pytest.fixture
def env(template, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user profiles of this machine
    monkeypatch.delenv("MNIST_HPC_CLUSTERS", raising=False)
    monkeypatch.delenv("MNIST_HPC_DATA_DIR", raising=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        (template / "tiny.yaml").read_text().replace(str(template / "unused"), str(tmp_path / "runs"))
    )
    shutil.copytree(template / "done", tmp_path / "done")
    return Env(tmp_path, template / "data", config, tmp_path / "done", cli)


# --------------------------------------------------------------------------- sweep files

LAUGHS = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
)


@case
def sweep_billion_laughs_in_grid(env):
    f = env.write("s.yaml", f"base: tiny.yaml\n{LAUGHS}\ngrid:\n  optim.lr: *a8\n")
    refused(env.run("sweep", "plan", f), 2, str(f))


@case
def sweep_billion_laughs_in_set(env):
    f = env.write(
        "s.yaml", f"base: tiny.yaml\n{LAUGHS}\nset:\n  model.hidden: *a8\ngrid:\n  optim.lr: [0.1]\n"
    )
    refused(env.run("sweep", "plan", f), 2, str(f))


@case
def sweep_random_count_of_a_billion(env):
    f = env.write(
        "s.yaml",
        """\
        base: tiny.yaml
        random: {count: 1000000000, seed: 0, params: {optim.lr: {loguniform: [1.0e-4, 1.0e-1]}}}
        """,
    )
    refused(env.run("sweep", "plan", f), 2, "1,000,000,000")


@case
def sweep_of_100000_runs_is_refused_quickly(env):
    lrs = ", ".join(f"{0.001 + i * 1e-6:.6f}" for i in range(1000))
    f = env.write(
        "s.yaml",
        f"base: tiny.yaml\ngrid:\n  optim.lr: [{lrs}]\n  data.batch_size: [{', '.join(str(8 + i) for i in range(100))}]\n",
    )
    t0 = time.time()
    refused(env.run("sweep", "plan", f), 2, "100,000 runs")
    assert time.time() - t0 < 5


@case
def sweep_file_that_is_a_folder(env):
    (env.tmp / "s.yaml").mkdir()
    r = env.run("sweep", "plan", env.tmp / "s.yaml")
    assert r.code != 0 and "Traceback" not in r.err


@case
def sweep_file_of_binary_garbage(env):
    f = env.tmp / "s.yaml"
    f.write_bytes(os.urandom(4000))
    refused(env.run("sweep", "plan", f), 2, str(f))


@case
def sweep_file_that_is_empty(env):
    f = env.write("s.yaml", "")
    refused(env.run("sweep", "plan", f), 2, str(f))


@case
def sweep_whose_base_is_itself(env):
    f = env.write("s.yaml", "base: s.yaml\ngrid:\n  optim.lr: [0.1]\n")
    refused(env.run("sweep", "plan", f), 2)


@case
def sweep_with_a_misspelt_key(env):
    f = env.write("s.yaml", "base: tiny.yaml\ngrid:\n  optim.lrr: [0.1, 0.2]\n")
    refused(env.run("sweep", "plan", f), 2, "optim.lr")


@case
def sweep_of_a_huge_file(env):
    f = env.write("s.yaml", "base: tiny.yaml\ngrid:\n  optim.lr: [0.1]\n# " + "x" * (2 << 20) + "\n")
    refused(env.run("sweep", "plan", f), 2, str(f))


# --------------------------------------------------------------------------- predict: images


def _digit(env, name="good.png"):
    from PIL import Image

    x, _ = synthetic_split(1, 2)
    p = env.tmp / name
    Image.fromarray(x[0]).resize((56, 56)).save(p)
    return p


def _predict_one_bad(env, bad, needle):
    good = _digit(env)
    r = env.run("predict", env.done, bad, good)
    assert r.code == 1 and r.out.startswith(f"{good}: "), r
    line = refused(r, 1, f"{bad}: ", needle)
    assert line.startswith("error: ")


@case
def predict_blank_image(env):
    from PIL import Image

    bad = env.tmp / "blank.png"
    Image.new("L", (64, 64), 0).save(bad)
    _predict_one_bad(env, bad, "blank")


@case
def predict_truncated_png(env):
    good = _digit(env, "src.png")
    bad = env.tmp / "cut.png"
    bad.write_bytes(good.read_bytes()[:50])
    _predict_one_bad(env, bad, "not an image")


@case
def predict_text_named_png(env):
    bad = env.write("notes.png", "dear diary")
    _predict_one_bad(env, bad, "not an image")


@case
def predict_a_folder(env):
    bad = env.tmp / "pics"
    bad.mkdir()
    _predict_one_bad(env, bad, "directory")


@case
def predict_a_missing_file(env):
    _predict_one_bad(env, env.tmp / "nowhere.png", "no such file")


@case
def predict_an_empty_file(env):
    bad = env.tmp / "empty.jpg"
    bad.write_bytes(b"")
    _predict_one_bad(env, bad, "empty file")


@case
def predict_a_decompression_bomb(env):
    from PIL import Image

    bad = env.tmp / "bomb.png"
    Image.new("1", (15000, 15000)).save(bad, optimize=False)  # 225 Mpixels of nothing, a small file
    _predict_one_bad(env, bad, "too many pixels")


# --------------------------------------------------------------------------- checkpoints


def _checkpoint(env) -> Path:
    return sorted((env.done / "checkpoints").glob("last-*.pt"))[-1]


@case
def checkpoint_truncated(env):
    bad = env.tmp / "trunc.pt"
    bad.write_bytes(_checkpoint(env).read_bytes()[:3000])
    refused(env.run("predict", bad, _digit(env)), 1, "truncated or corrupted")


@case
def checkpoint_empty(env):
    bad = env.tmp / "empty.pt"
    bad.write_bytes(b"")
    refused(env.run("evaluate", bad, "--data-dir", env.data), 1, str(bad))


@case
def checkpoint_that_runs_code(env):
    marker = env.tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = env.tmp / "evil.pt"
    torch.save({"format": "mnist-hpc-checkpoint", "version": 1, "model": Evil()}, bad)
    refused(env.run("evaluate", bad, "--data-dir", env.data), 1, "refused")
    assert not marker.exists()


@case
def checkpoint_raw_pickle(env):
    bad = env.tmp / "raw.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": "mnist-hpc-checkpoint", "version": 1}, f, protocol=4)
    refused(env.run("predict", bad, _digit(env)), 1, str(bad))


@case
def checkpoint_asking_for_a_huge_model(env):
    state = torch.load(_checkpoint(env), weights_only=True)
    state["config"]["model"]["hidden"] = [1_000_000_000]
    bad = env.tmp / "huge.pt"
    torch.save(state, bad)
    t0 = time.time()
    refused(env.run("predict", bad, _digit(env)), None, "hidden")
    assert time.time() - t0 < 10


@case
def checkpoint_of_a_future_format(env):
    state = torch.load(_checkpoint(env), weights_only=True)
    state["version"] = 99
    bad = env.tmp / "future.pt"
    torch.save(state, bad)
    refused(env.run("evaluate", bad, "--data-dir", env.data), 1, "version 99")


@case
def checkpoint_of_someone_else(env):
    bad = env.tmp / "theirs.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    refused(env.run("predict", bad, _digit(env)), 1, "not an mnist-hpc checkpoint")


@case
def run_folder_without_checkpoints(env):
    (env.tmp / "empty-run").mkdir()
    refused(env.run("predict", env.tmp / "empty-run", _digit(env)), 1, "no checkpoint found")


# --------------------------------------------------------------------------- data folders


@case
def data_folder_is_a_file(env):
    f = env.write("data.bin", "x")
    r = env.run("train", env.config, "--set", f"data.root={f}", "--run-dir", env.tmp / "r")
    line = refused(r, 1, "is a file, not a folder")
    assert "internet" not in line
    from mnist_hpc.runs import read_state

    assert read_state(env.tmp / "r").state == "failed"  # a failed marker, not an empty folder


@case
def data_file_truncated(env):
    root = make_dataset(env.tmp / "d", n_train=200, n_test=50)
    f = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:100])
    refused(env.run("train", env.config, "--data-dir", root, "--run-dir", env.tmp / "r"), 1, "corrupted")


@case
def data_labels_out_of_range(env):
    import numpy as np

    from tests.conftest import write_idx

    root = make_dataset(env.tmp / "d", n_train=200, n_test=50)
    write_idx(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.full(200, 42, dtype=np.uint8))
    refused(env.run("train", env.config, "--data-dir", root, "--run-dir", env.tmp / "r"), 1, "labels outside")


@case
def data_missing_offline(env):
    os.environ["MNIST_HPC_OFFLINE"] = "1"
    try:
        refused(env.run("train", env.config, "--data-dir", env.tmp / "nodata"), 1, "mnist-hpc data download")
    finally:
        del os.environ["MNIST_HPC_OFFLINE"]


@case
def data_raw_folder_is_a_file(env):
    (env.tmp / "d" / "MNIST").mkdir(parents=True)
    (env.tmp / "d" / "MNIST" / "raw").write_text("oops")
    refused(env.run("train", env.config, "--data-dir", env.tmp / "d"), 1, "is a file, not a folder")


# --------------------------------------------------------------------------- run folders and resume


@case
def run_dir_of_a_completed_run(env):
    refused(env.train("--run-dir", env.done, "--set", "optim.lr=0.01"), 1, "holds another run")


@case
def run_dir_of_an_interrupted_run(env):
    (env.done / "summary.json").unlink()
    env.mark()
    refused(env.train("--run-dir", env.done), 1, "holds another run", "--resume auto")


@case
def resume_with_another_learning_rate(env):
    line = refused(env.train("--resume", env.done, "--set", "optim.lr=0.5"), 1, "optim.lr 0.003 -> 0.5")
    assert "--init-from" in line


@case
def resume_with_another_model(env):
    refused(
        env.train("--resume", env.done, "--set", "model={name: lenet5}"), 1, "model.name 'mlp' -> 'lenet5'"
    )


@case
def resume_with_fewer_epochs_than_done(env):
    (env.done / "summary.json").unlink()
    env.mark()
    refused(
        env.train("--resume", "auto", "--run-dir", env.done, "--set", "train.epochs=1"), 1, "train.epochs=1"
    )


@case
def resume_a_checkpoint_copied_from_another_run(env):
    other = env.tmp / "other"
    shutil.copytree(env.done, other)
    (other / "summary.json").unlink()
    (other / "run.json").write_text(json.dumps({"run_id": "someoneelse"}))
    refused(env.train("--resume", "auto", "--run-dir", other), 1, "belongs to run")


@case
def resume_a_path_that_does_not_exist(env):
    refused(env.train("--resume", env.tmp / "nope.pt"), None, "nope.pt")


@case
def resume_and_init_from_together(env):
    refused(env.train("--resume", "auto", "--init-from", env.done), 2, "pick one")


@case
def init_from_a_garbage_file(env):
    bad = env.write("garbage.pt", "garbage")
    refused(env.train("--init-from", bad), 1, str(bad))
    assert not (env.tmp / "runs").exists()  # nothing was created for a refused start


@case
def init_from_another_architecture(env):
    refused(
        env.train("--init-from", env.done, "--set", "model.hidden=[16]", "--run-dir", env.tmp / "r"),
        1,
        "do not fit",
    )


@case
def run_dir_with_a_garbage_identity(env):
    (env.done / "run.json").write_text("{{{ not json")
    env.mark()
    refused(env.train("--run-dir", env.done), 1, "holds another run")


@case
def run_dir_being_trained_by_another_process(env):
    from mnist_hpc.runs.state import TrainingLock

    busy = env.tmp / "busy"
    busy.mkdir()
    lock = TrainingLock(busy)
    assert lock.acquire()
    try:
        refused(env.train("--run-dir", busy), 1, "another process is training this run now")
    finally:
        lock.release()


@case
def output_dir_under_a_file(env):
    blocker = env.write("blocker", "x")
    refused(
        env.run(
            "train", env.config, "--data-dir", env.data, "--set", f"experiment.output_dir={blocker}/runs"
        ),
        1,
        "not writable",
    )


@case
def extending_a_completed_run_leaves_it_alone(env):
    r = env.train("--resume", env.done, "--set", "train.epochs=3")
    assert r.code == 0 and "left as they are" in r.out, r
    (new,) = list((env.tmp / "runs").iterdir())
    assert json.loads((new / "summary.json").read_text())["parent_run"] == str(env.done)


# --------------------------------------------------------------------------- a full disk


def _tmpfs(env, size) -> Path:
    mnt = env.tmp / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    return mnt


@case
def disk_full_at_the_second_checkpoint(env):
    mnt = _tmpfs(env, "3m")
    try:  # a model whose checkpoints (with Adam's state) take ~1.2 MB each
        r = env.train("--run-dir", mnt / "r", "--set", "model.hidden=[128]", "--set", "train.epochs=4")
        refused(r, 1, "no space left on device", "free")
        kept = sorted((mnt / "r" / "checkpoints").glob("last-*.pt"))
        assert kept and all(torch.load(k, weights_only=True)["format"] for k in kept)
        assert not list(mnt.rglob(".*.tmp-*"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@case
def disk_full_from_the_start(env):
    mnt = _tmpfs(env, "64k")
    try:
        r = env.train("--run-dir", mnt / "r", "--set", "model.hidden=[128]")
        refused(r, 1, "no space left on device")
        assert not list(mnt.rglob(".*.tmp-*"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --------------------------------------------------------------------------- cluster profile files


def _submit(env, profile_text):
    f = env.write("clusters.yaml", profile_text)
    os.environ["MNIST_HPC_CLUSTERS"] = str(f)
    try:
        return env.run("submit", env.config, "--cluster", "mine", "--dry-run"), f
    finally:
        del os.environ["MNIST_HPC_CLUSTERS"]


@case
def profile_billion_laughs(env):
    t0 = time.time()
    r, f = _submit(env, f"{LAUGHS}\nprofiles:\n  mine:\n    extends: generic\n    modules: *a8\n")
    refused(r, 2, str(f))
    assert time.time() - t0 < 5


@case
def profile_binary_garbage(env):
    f = env.tmp / "clusters.yaml"
    f.write_bytes(b"\xff\xfe\x00" + os.urandom(3000))
    os.environ["MNIST_HPC_CLUSTERS"] = str(f)
    try:
        refused(env.run("submit", env.config, "--cluster", "generic", "--dry-run"), 2, str(f))
    finally:
        del os.environ["MNIST_HPC_CLUSTERS"]


@case
def profile_with_a_misspelt_key(env):
    r, _ = _submit(env, "profiles:\n  mine:\n    extends: generic\n    gpus_per_nod: 4\n")
    refused(r, 2, "gpus_per_node")


@case
def profile_that_extends_itself(env):
    r, _ = _submit(env, "profiles:\n  mine:\n    extends: mine\n")
    refused(r, 2, "mine")


@case
def profile_file_that_does_not_exist(env):
    os.environ["MNIST_HPC_CLUSTERS"] = str(env.tmp / "none.yaml")
    try:
        refused(env.run("submit", env.config, "--cluster", "generic", "--dry-run"), 2, "no such file")
    finally:
        del os.environ["MNIST_HPC_CLUSTERS"]


# --------------------------------------------------------------------------- signals


def _signal_at(step_no, signum):
    """Deliver a real signal to this process at optimizer step ``step_no``."""
    from mnist_hpc.training import trainer

    real, count = trainer.train_step, [0]

    def step(*args, **kwargs):
        count[0] += 1
        if count[0] == step_no:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    return trainer, step, real


def _with_signal(env, signum, *args):
    trainer, step, real = _signal_at(20, signum)
    trainer.train_step = step
    try:
        return env.train("--run-dir", env.tmp / "r", *args)
    finally:
        trainer.train_step = real


@case
def signal_sigterm_checkpoints_and_says_how_to_resume(env):
    from mnist_hpc.runs import read_state

    r = _with_signal(env, signal.SIGTERM)
    assert r.code == 75 and "Traceback" not in r.err and "--resume auto" in r.out, r
    st = read_state(env.tmp / "r")
    assert (st.state, st.signal) == ("interrupted", "SIGTERM")


@case
def signal_sigint_names_the_kept_checkpoint(env):
    from mnist_hpc.runs import read_state

    r = _with_signal(env, signal.SIGINT)
    refused(r, 130, "last-epoch0002-step000000.pt", "--resume auto")
    assert read_state(env.tmp / "r").signal == "SIGINT"


@case
def signal_sigusr1_then_resume_with_a_changed_config(env):
    r = _with_signal(env, signal.SIGUSR1)
    assert r.code == 75, r
    env.mark()
    refused(
        env.train("--run-dir", env.tmp / "r", "--resume", "auto", "--set", "optim.name=sgd"), 1, "optim.name"
    )


@case
def signal_sigint_to_a_real_process(env):
    """Ctrl-C from a terminal to a training process (end to end, with its exit code)."""
    run = env.tmp / "r"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            str(env.config),
            "--data-dir",
            str(env.data),
            "--run-dir",
            str(run),
            "--set",
            "train.epochs=200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
    )
    t0 = time.time()
    while not list((run / "checkpoints").glob("last-*.pt")) and time.time() - t0 < 15 and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "kept the newest checkpoint" in err and f"--run-dir {run} --resume auto" in err, err


# --------------------------------------------------------------------------- the corpus, run


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, env):
    env.mark()
    t0 = time.time()
    CASES[name](env)
    assert time.time() - t0 < 20, f"{name} took {time.time() - t0:.0f} s"
    before, after = env.before, hashes(env.tmp)
    lost = {p for p in before if p not in after}
    changed = {p for p in before if p in after and before[p] != after[p]}
    assert not lost and not changed, (lost, changed)


def test_the_corpus_is_large_enough():
    assert len(CASES) > 40


def test_ctrl_c_inside_a_checkpoint_write_is_an_interrupt_not_a_full_disk(tmp_path):
    """torch.save's writer reports a Ctrl-C during its write as a short-write RuntimeError (the
    KeyboardInterrupt as its context); that once read as 'no space left on device'."""
    import torch

    from mnist_hpc.runs.folder import atomic_write_with

    def writer(f):
        class Interrupting:
            def __init__(self):
                self.n = 0

            def write(self, b):
                self.n += 1
                if self.n == 3:
                    raise KeyboardInterrupt
                return f.write(b)

            def flush(self):
                f.flush()

        torch.save({"a": torch.zeros(100_000)}, Interrupting())

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(tmp_path / "x.pt", writer)
    assert not list(tmp_path.iterdir())  # the temporary file is gone, nothing half-written
