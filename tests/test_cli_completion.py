"""Shell completion: the completers (config names, YAML files, clusters, --set keys) called
directly, and end to end through click's bash protocol (COMP_WORDS/COMP_CWORD), the bash script
itself, and fish and zsh where they are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mnist_hpc import api
from mnist_hpc.cli import completion as C
from tests.paths import ROOT


def values(items) -> list[str]:
    return [item.value for item in items]


# --------------------------------------------------------------------------- the completers


def test_config_names_then_yaml_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick.yaml").write_text("{}")
    items = C.complete_config(None, None, "quick")
    assert values(items) == ["quickstart", "quick.yaml"]
    assert items[0].help and "the first minute" in items[0].help  # the config's one-line purpose
    assert "cnn_classic" in values(C.complete_config(None, None, ""))


def test_yaml_files_below_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in (
        "a.yaml",
        "b.yml",
        "notes.txt",
        "configs/x.yaml",
        "configs/sweeps/lr.yaml",
        ".hidden/h.yaml",
        "runs/r1/config.yaml",
        "1/2/3/deep.yaml",
        "1/2/3/4/too-deep.yaml",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    assert C.yaml_files("") == [
        "a.yaml",
        "b.yml",
        "1/2/3/deep.yaml",
        "configs/x.yaml",
        "configs/sweeps/lr.yaml",
    ]
    assert C.yaml_files("configs/s") == ["configs/sweeps/lr.yaml"]
    assert C.yaml_files("configs/") == ["configs/x.yaml", "configs/sweeps/lr.yaml"]
    assert C.yaml_files(f"{tmp_path}/configs/x") == [f"{tmp_path}/configs/x.yaml"]
    assert C.yaml_files("nowhere/") == []
    assert values(C.complete_yaml(None, None, "b")) == ["b.yml"]


def test_cluster_names_with_the_users_profiles(tmp_path, monkeypatch):
    (tmp_path / "mnist-hpc").mkdir()
    (tmp_path / "mnist-hpc" / "clusters.yaml").write_text(
        "profiles:\n  mylab:\n    extends: generic\n    description: the lab's cluster\n"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("MNIST_HPC_CLUSTERS", raising=False)
    assert values(C.complete_cluster(None, None, "n")) == ["narval", "nibi"]
    (mine,) = C.complete_cluster(None, None, "my")
    assert mine.value == "mylab" and mine.help == "the lab's cluster"
    assert {"fir", "trillium", "local", "mylab"} <= set(values(C.complete_cluster(None, None, "")))


def test_a_broken_profile_file_offers_nothing_instead_of_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(tmp_path / "missing.yaml"))
    assert C.complete_cluster(None, None, "") == []


def test_config_keys_follow_the_schema_and_the_model():
    keys = api.config_keys("mlp")
    assert {
        "optim.lr",
        "train.checkpoint.every",
        "data.augment.shift",
        "model.name",
        "model.hidden",
        "runtime.device",
        "experiment.name",
    } <= set(keys)
    assert "model.channels" not in keys and "optim" not in keys and "train.checkpoint" not in keys
    assert keys["optim.lr"] == "peak learning rate"
    assert {"model.channels", "model.dropout1"} <= set(api.config_keys("cnn"))
    every = api.config_keys(None)  # the model is unknown: every model's parameters
    assert {"model.hidden", "model.channels", "model.width"} <= set(every)


def test_current_model(tmp_path):
    assert C.current_model({"overrides": ("optim.lr=1", "model.name=lenet5")}) == "lenet5"
    assert C.current_model({"config": "mlp_keras"}) == "mlp"
    assert C.current_model({"config_file": "cnn_classic"}) == "cnn"
    (tmp_path / "base.yaml").write_text("extends: quickstart\nmodel: {name: resnet18}\n")
    (tmp_path / "sweep.yaml").write_text("base: base.yaml\ngrid: {optim.lr: [0.1]}\n")
    assert C.current_model({"sweep_file": str(tmp_path / "sweep.yaml")}) == "resnet18"
    assert C.current_model({}) is None


def test_set_completes_keys_with_an_equals_sign(monkeypatch):
    from mnist_hpc.cli.main import cli

    monkeypatch.delenv(C.COMPLETE_VAR, raising=False)
    ctx = cli.make_context("mnist-hpc", ["train"], resilient_parsing=True)
    train = cli.commands["train"].make_context(
        "train", ["mlp_keras", "--set", "x=1"], parent=ctx, resilient_parsing=True
    )
    items = C.complete_set(train, None, "model.")
    assert values(items) == ["model.name=", "model.hidden=", "model.activation=", "model.dropout="]
    assert items[1].help.startswith("hidden layer widths")
    assert C.complete_set(train, None, "optim.lr=0") == []  # a value: nothing to offer


def test_rejoin_undoes_bash_word_breaks():
    assert C.rejoin(["--set", "model.name", "=", "mlp", "--gpus", "a100", ":", "1", "--set", "x", "="]) == [
        "--set",
        "model.name=mlp",
        "--gpus",
        "a100:1",
        "--set",
        "x=",
    ]


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def shell_env(tmp_path):
    """PATH with a `mnist-hpc` that runs this checkout, as an installed one would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mnist-hpc").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mnist_hpc "$@"\n')
    (bin_dir / "mnist-hpc").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_MNIST_HPC", "COMP_"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(ROOT)}


def _complete(env, cwd, words: str, cword: int) -> list[str]:
    proc = subprocess.run(
        ["mnist-hpc"],
        env={**env, "COMP_WORDS": words, "COMP_CWORD": str(cword), C.COMPLETE_VAR: "bash_complete"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def test_bash_protocol_end_to_end(shell_env, tmp_path):
    assert _complete(shell_env, tmp_path, "mnist-hpc su", 1) == ["plain,submit", "plain,summary"]
    assert _complete(shell_env, tmp_path, "mnist-hpc sweep su", 2) == ["plain,submit"]
    assert "plain,quickstart" in _complete(shell_env, tmp_path, "mnist-hpc train q", 2)
    assert _complete(shell_env, tmp_path, "mnist-hpc submit quickstart --cluster tr", 4) == ["plain,trillium"]
    out = _complete(shell_env, tmp_path, "mnist-hpc submit quickstart --cluster local --set model.", 6)
    assert out == [
        "plain,model.name=",
        "plain,model.width=",
        "plain,model.depth=",
        "plain,model.channels=",
        "plain,model.head=",
        "plain,model.downsample=",
        "plain,model.convs=",
    ]  # quickstart's model: fast
    # as bash splits it, at '=': the model named on the line wins over the config's
    out = _complete(shell_env, tmp_path, "mnist-hpc train quickstart --set model.name = mlp --set model.h", 8)
    assert out == ["plain,model.hidden="]


def test_completion_imports_no_torch(shell_env, tmp_path):
    code = (
        "import sys\nfrom mnist_hpc.cli.main import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            **shell_env,
            "COMP_WORDS": "mnist-hpc train mlp_keras --set model.",
            "COMP_CWORD": "4",
            C.COMPLETE_VAR: "bash_complete",
        },
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "plain,model.hidden=" in proc.stdout


def test_bash_script_adds_no_space_after_a_key(shell_env, tmp_path):
    script = tmp_path / "mnist-hpc.bash"
    script.write_text(
        subprocess.run(
            ["mnist-hpc"],
            env={**shell_env, C.COMPLETE_VAR: "bash_source"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    test = f"""
source {script}
compopt() {{ local IFS=" "; echo "compopt $*" >&2; }}  # the builtin works only inside a real TAB
complete -p mnist-hpc
COMP_WORDS=(mnist-hpc train quickstart --set model.name = mlp --set optim.l); COMP_CWORD=8
_mnist_hpc_completion mnist-hpc
printf 'reply: %s\\n' "${{COMPREPLY[@]}}"
COMP_WORDS=(mnist-hpc submit quickstart --cluster nar); COMP_CWORD=4; COMPREPLY=()
_mnist_hpc_completion mnist-hpc
printf 'reply: %s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(
        ["bash", "-c", test], env=shell_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "complete -o nosort -F _mnist_hpc_completion mnist-hpc" in proc.stdout
    assert proc.stdout.splitlines()[1:] == ["reply: optim.lr=", "reply: narval"]
    assert proc.stderr.splitlines() == ["compopt -o nospace"]  # for optim.lr=, not for narval


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_end_to_end(shell_env, tmp_path):
    script = 'mnist-hpc | source; complete -C"mnist-hpc train --set optim.l"; complete -C"mnist-hpc train q"'
    proc = subprocess.run(
        ["fish", "--no-config", "-c", script],
        env={**shell_env, C.COMPLETE_VAR: "fish_source"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "optim.lr=\tpeak learning rate" and lines[1].startswith("quickstart\t")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_adds_no_space_after_a_key(shell_env, tmp_path):
    """compadd and _describe work only inside a real completion widget: stand-ins print what
    the script hands them."""
    script = tmp_path / "mnist-hpc.zsh"
    script.write_text(
        subprocess.run(
            ["mnist-hpc"],
            env={**shell_env, C.COMPLETE_VAR: "zsh_source"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    test = f"""
compdef() {{ : }}
source {script}
compadd() {{ print -r -- "compadd $*" }}
_describe() {{ print -r -- "_describe ${{(q)@}}"; print -rl -- ${{(P)3}} }}
words=(mnist-hpc train --set optim.l); CURRENT=4; _mnist_hpc_completion
words=(mnist-hpc submit quickstart --cluster nar); CURRENT=5; _mnist_hpc_completion
"""
    proc = subprocess.run(
        ["zsh", "-f", "-c", test], env=shell_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "_describe -V unsorted open -U -S ''" and lines[1] == "optim.lr=:peak learning rate"
    assert lines[2] == "_describe -V unsorted closed -U" and lines[3].startswith("narval:")
