"""Config inputs a careless user may hand over (issue 27, defects 9 and 10): a config path that
is a FIFO or a device file is refused at once (reading it would block forever), and so is an
image to predict of that kind; experiment.name may not hold a newline or other control
characters, '/', '..', since it becomes part of folder names and job scripts."""

from __future__ import annotations

import os
import threading

import pytest

import mnist_hpc
from mnist_hpc.errors import ConfigError
from tests.cli_support import one_line


def _within(seconds, fn):
    """fn()'s result, or a test failure when it blocks (a reader waiting on a FIFO)."""
    out = {}

    def call():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        fd = os.open(fifo_of(fn), os.O_WRONLY | os.O_NONBLOCK) if fifo_of(fn) else None  # unblock the reader
        if fd is not None:
            os.close(fd)
        pytest.fail(f"blocked for more than {seconds} s")
    return out


def fifo_of(fn):
    return getattr(fn, "fifo", None)


def test_a_config_path_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, cli):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)

    def validate():
        return cli("config", "validate", fifo)

    validate.fifo = fifo
    r = _within(10, validate)["value"]
    assert one_line(r).endswith(f"{fifo}: not a regular file (a named pipe (FIFO)); give a YAML file")
    assert r.code != 0
    load = _within(10, lambda: mnist_hpc.load_config("/dev/zero"))
    assert isinstance(load.get("error"), ConfigError) and "not a regular file (a device file)" in str(
        load["error"]
    )
    r = cli("train", "/dev/null")
    assert "/dev/null: not a regular file (a device file); give a YAML file" in one_line(r)


def test_an_image_to_predict_that_is_a_fifo_is_refused_at_once(tmp_path):
    from mnist_hpc.errors import UserError
    from mnist_hpc.training import imageprep

    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)

    def prepare():
        return imageprep.prepare(fifo)

    prepare.fifo = fifo
    out = _within(10, prepare)
    assert isinstance(out.get("error"), UserError)
    assert str(out["error"]) == f"{fifo}: not an image file (a named pipe (FIFO)); give a PNG or JPEG file"


@pytest.mark.parametrize(
    "name, why",
    [
        ("two\nlines", "without control characters"),
        ("tab\there", "without control characters"),
        ("bell\a", "without control characters"),
        ("a/b", "without '/'"),
        ("..", "without '..'"),
        ("x..y", "without '..'"),
        (".hidden", "not starting with '.'"),
        ("  ", "not empty or blank"),
        ("n" * 101, "at most 100 characters"),
        ("para\u2029graph", "without control characters"),
    ],
)
def test_experiment_name_with_control_characters_or_path_parts_is_refused(tmp_path, cli, name, why):
    import json

    config = tmp_path / "c.yaml"
    config.write_text(f"experiment: {{name: {json.dumps(name)}, output_dir: {tmp_path / 'runs'}}}\n")
    line = one_line(cli("config", "validate", config))
    assert (
        line.startswith("error")
        and f"{config}: experiment.name: expected a name for run folders and job scripts (" in line
    )
    assert why in line
    r = cli("train", config)
    assert r.code == 2 and why in one_line(r) and not (tmp_path / "runs").exists()


def test_ordinary_and_emoji_names_are_accepted(tmp_path):
    for name in ("lr-sweep", "exp.v1", "run 2", "Zürich", "🦊"):
        assert mnist_hpc.load_config("quickstart", [f"experiment.name={name}"]).experiment.name == name
