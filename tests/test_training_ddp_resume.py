"""Mid-epoch resume under DDP (gloo, CPU, deterministic): the partial-epoch sums a checkpoint
carries are over every rank, so the resumed epoch's metrics equal an uninterrupted run's with
the same world size, and a run moved from 2 ranks to 1 and back counts every image exactly once.
A world size that would cut the epoch into other steps is refused in one line."""

from __future__ import annotations

import subprocess

import pytest

from mnist_hpc.runs.folder import read_metrics_csv
from mnist_hpc.training import checkpoint as ckpt
from tests.ddp_support import _free_port, _rank_env, clean_env, train_argv

# several gloo processes training for real: tens of seconds each on 2 cores
pytestmark = pytest.mark.slow

# 960 training images, global batch 16: 60 steps per epoch; a checkpoint every 7 steps
SETS = [
    "--set",
    "data.batch_size=16",
    "--set",
    "train.epochs=2",
    "--set",
    "runtime.deterministic=true",
    "--set",
    "optim={name: sgd, lr: 0.05, momentum: 0.9}",
    "--set",
    "runtime.dist_timeout=60",
    "--set",
    "train.checkpoint={every: 7, unit: steps, keep: 100}",
]


def train(config, data, nproc, *extra):
    r = subprocess.run(
        train_argv(config, data, "--nproc", str(nproc), *SETS, *extra),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def mid(run, epoch, step):
    """The checkpoint ``run`` saved at (epoch, step): every rank's position; its partial sums."""
    return run / "checkpoints" / ckpt.checkpoint_name(epoch, step)


def newest(run) -> dict:
    return ckpt.load(ckpt.list_checkpoints(run / "checkpoints")[0])


@pytest.fixture(scope="module")
def ref(tmp_path_factory, synth_root):
    """An uninterrupted 2-rank run (its mid-epoch checkpoints are where the others resume)."""
    tmp = tmp_path_factory.mktemp("ddp-resume")
    config = tmp / "tiny.yaml"
    config.write_text(f"""
experiment: {{name: tiny, seed: 0, output_dir: {tmp / "runs"}}}
data: {{dataset: mnist, val_split: 0.2, batch_size: 64, eval_batch_size: 256}}
model: {{name: mlp, hidden: [32]}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 2}}
runtime: {{threads: 1}}
""")
    train(config, synth_root, 2, "--run-dir", str(tmp / "ref"))
    return config, tmp, tmp / "ref"


def test_a_mid_epoch_resume_with_two_ranks_reports_the_uninterrupted_metrics(ref, synth_root):
    config, tmp, ref_run = ref
    saved = ckpt.load(mid(ref_run, 0, 28))
    assert saved["partial"]["seen"] == 28 * 16 and saved["world_size"] == 2  # both ranks' images
    again = tmp / "again"
    out = train(config, synth_root, 2, "--resume", str(mid(ref_run, 0, 28)), "--run-dir", str(again))
    assert "resumed from" in out
    want, got = read_metrics_csv(ref_run), read_metrics_csv(again)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want, strict=False):
        assert a.train_acc == b.train_acc, (a, b)
        assert a.train_loss == pytest.approx(b.train_loss, abs=2e-6), (a, b)
        assert a.val_acc == b.val_acc
    assert newest(again)["images_seen"] == newest(ref_run)["images_seen"] == 2 * 960


def test_two_ranks_to_one_and_back_counts_every_image_once(ref, synth_root):
    config, tmp, ref_run = ref
    one, back = tmp / "one", tmp / "back"
    train(config, synth_root, 1, "--resume", str(mid(ref_run, 0, 28)), "--run-dir", str(one))
    saved = ckpt.load(mid(one, 1, 10))  # saved by one process, resumed below by two
    assert saved["partial"]["seen"] == 10 * 16 and saved["world_size"] == 1
    train(config, synth_root, 2, "--resume", str(mid(one, 1, 10)), "--run-dir", str(back))
    want = read_metrics_csv(ref_run)
    for run in (one, back):
        assert newest(run)["images_seen"] == 2 * 960  # exact counts, whatever the world size
        for a, b in zip(read_metrics_csv(run), want, strict=False):
            # one rank and two sum a global batch's gradient in another order: close, not bit-equal
            assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3), (run.name, a, b)
            assert a.train_acc == pytest.approx(b.train_acc, abs=3 / 960), (run.name, a, b)


def test_a_world_size_that_changes_the_steps_is_refused_in_one_line(ref, synth_root):
    config, tmp, _ = ref
    # 945 images in batches of 16: one process takes 60 steps (the last of 1 image), two take 59
    odd = ["--set", "data.subset=945", "--set", "train.epochs=1"]
    train(config, synth_root, 1, *odd, "--run-dir", str(tmp / "odd"))
    port = _free_port()
    argv = train_argv(
        config,
        synth_root,
        *SETS,
        *odd,
        "--resume",
        str(mid(tmp / "odd", 0, 14)),
        "--run-dir",
        str(tmp / "odd-2"),
    )
    procs = [
        subprocess.Popen(
            argv, env=_rank_env(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outs
    for _, err in outs:
        assert err.strip().splitlines() == [
            f"error: {mid(tmp / 'odd', 0, 14)}: saved by 1 rank(s) with 60 steps per epoch, but with 2 rank(s) "
            f"an epoch has 59 (a last batch smaller than the world size is dropped): resume with 1 rank(s)"
        ], err
