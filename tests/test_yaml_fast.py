"""The fast (libyaml) path of the one YAML loader, which reports use for every run's config.yaml
(issue 27, "Load": `report` over 1,000 run folders spent 95% of its time parsing YAML in pure
Python): the same values as the pure-Python loader, the same limits, the same messages."""

from __future__ import annotations

import pytest
import yaml

from mnist_hpc.config.yamlio import MAX_DEPTH, read_yaml, yaml_load
from tests.paths import ROOT

needs_libyaml = pytest.mark.skipif(
    not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml"
)


@needs_libyaml
@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_the_same_values_as_the_python_loader(path):
    assert read_yaml(path, fast=True) == read_yaml(path)


@needs_libyaml
def test_yaml_12_floats_and_aliases():
    doc = "lr: 1e-3\nwd: 5.0e-4\nn: 12\nflag: yes\nbase: &b [1, 2]\ncopy: *b\n"
    assert (
        yaml_load(doc, fast=True)
        == yaml_load(doc)
        == {"lr": 0.001, "wd": 0.0005, "n": 12, "flag": True, "base": [1, 2], "copy": [1, 2]}
    )


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
)


@needs_libyaml
@pytest.mark.parametrize(
    "doc, message",
    [
        (BOMB, "expands to more than"),
        ("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5), f"nested more than {MAX_DEPTH} levels deep"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("x: [1\n", "while parsing a flow sequence"),
        ("x: !!python/object:os.system ls\n", "could not determine a constructor"),
    ],
)
def test_the_same_limits_and_messages(doc, message):
    with pytest.raises(yaml.YAMLError) as fast:
        yaml_load(doc, fast=True)
    with pytest.raises(yaml.YAMLError) as slow:
        yaml_load(doc)
    assert message in str(fast.value) and str(fast.value) == str(slow.value)
