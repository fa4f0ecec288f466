"""`push` destinations (issue 27, defect 16): a malformed one (``user@``, ``:path``, spaces,
``host:`` with no path, shell characters, an option) is refused in one line before rsync, scp
or ssh is called, or any data is packed."""

from __future__ import annotations

import pytest

from mnist_hpc.cluster import push as pushing
from mnist_hpc.errors import UserError
from tests.cli_support import one_line
from tests.paths import ROOT


@pytest.mark.parametrize(
    "target, why",
    [
        ("user@", "no host after '@'"),
        ("@narval", "nothing before '@'"),
        (":scratch/mnist", "no host before ':'"),
        ("me@narval:", "no folder after ':'"),
        ("me@nar val", "spaces or control characters"),
        ("me@narval:my dir", "spaces or control characters"),
        ("me@narval:dir\n", "spaces or control characters"),
        ("-oProxyCommand=x", "is not a host name"),
        ("me@narval:-rf", "is not a folder name"),
        ("me@narval:a;rm", "is not a folder name"),
        ("me@narval:$(id)", "is not a folder name"),
        ("a@b@narval", "is not a user name"),
        ("", "no destination"),
    ],
)
def test_push_refuses_a_malformed_destination_before_calling_anything(target, why, cli, monkeypatch):
    called = []
    monkeypatch.setattr(pushing.subprocess, "run", lambda *a, **k: called.append(a))
    monkeypatch.setattr(pushing.datapack, "pack", lambda *a, **k: called.append(a))
    with pytest.raises(UserError) as e:
        pushing.check_target(target)
    assert why in str(e.value) and "expected USER@HOST[:DIR]" in str(e.value)
    r = cli("push", "--project", ROOT, "--with-data", "--", target)
    assert why in one_line(r) and called == []


@pytest.mark.parametrize(
    "target, login, remote",
    [
        ("me@narval.alliancecan.ca", "me@narval.alliancecan.ca", None),
        ("narval", "narval", None),
        ("me@fir:proj", "me@fir", "proj"),
        ("me@fir:~/scratch/mnist/", "me@fir", "~/scratch/mnist"),
        ("first.last@rorqual:/scratch/first.last/x", "first.last@rorqual", "/scratch/first.last/x"),
    ],
)
def test_push_takes_ordinary_destinations(target, login, remote):
    assert pushing.check_target(target) == (login, remote)
