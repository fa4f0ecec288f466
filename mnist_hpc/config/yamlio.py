"""The one YAML loader for everything mnist-hpc reads: configs, sweeps, cluster profiles, run files.

``yaml.safe_load`` semantics (no tags that build Python objects), plus what a tool that reads
files from other people needs:

- a duplicate key is an error (a silently lost value is a typo's twin);
- YAML 1.2 floats: ``1e-3`` is a number, as learning rates are written;
- bounded input: a file may hold at most ``MAX_BYTES``; a document may expand to at most
  ``MAX_NODES`` nodes, an alias counted again at every use (a "billion laughs" document of a
  few hundred bytes is refused before anything is built), and nest at most ``MAX_DEPTH`` deep;
- messages quote at most ``MAX_QUOTE`` characters of any value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from mnist_hpc.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB: configs, sweeps and profiles are a few KiB
MAX_NODES = 100_000  # scalars + lists + mappings after alias expansion
MAX_DEPTH = 64  # nesting of lists and mappings
MAX_QUOTE = 80  # characters of a value quoted in a message


class YAMLLimitError(yaml.YAMLError):
    """A document over one of the loader's limits (size, expansion, depth)."""


def cut(text: object, limit: int = MAX_QUOTE) -> str:
    """``str(text)`` shortened to ``limit`` characters, marking the cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with duplicate-key errors, YAML 1.2 floats and the limits above."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose alias expansion exceeds MAX_NODES, or that refers to itself.

    Aliases share nodes, so the graph stays small while its expansion doubles at every level;
    the expanded size is counted once per distinct node (memoised), never by expanding.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YAMLLimitError("an alias refers to the node that contains it (a recursive structure)")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_NODES:
            raise YAMLLimitError(
                f"the document expands to more than {MAX_NODES:,} values "
                "(anchors and aliases repeating data); refused"
            )
        sizes[key] = total
        return total

    size(root)


def _construct_mapping(
    loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Hashable, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {cut(repr(key))}", key_node.start_mark
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # Python parses at most 4,300 digits; no setting needs a fraction of that
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value):,} characters is too long", node.start_mark
        ) from None


_BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
# YAML 1.1 reads `1e-3` (no dot) as a string; learning rates are written that way, so read
# every decimal/exponent spelling as a float, as YAML 1.2 does.
_BoundedLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_graph(root: yaml.Node) -> None:
    """The limits of ``_check_expansion`` and MAX_DEPTH on a composed node graph, in one pass
    (memoised per node: an alias is counted, never walked again)."""
    seen: dict[int, tuple[int, int] | None] = {}  # None: being walked

    def walk(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in seen:
            done = seen[key]
            if done is None:
                raise YAMLLimitError("an alias refers to the node that contains it (a recursive structure)")
            return done
        seen[key] = None
        total, deepest = 1, 0
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = ()
        for child in children:
            size, depth = walk(child)
            total, deepest = total + size, max(deepest, depth)
        if total > MAX_NODES:
            raise YAMLLimitError(
                f"the document expands to more than {MAX_NODES:,} values "
                "(anchors and aliases repeating data); refused"
            )
        if deepest + 1 > MAX_DEPTH:
            raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep")
        done = seen[key] = (total, deepest + 1)
        return done

    walk(root)


_FAST_LOADER: type[yaml.CSafeLoader] | None = None  # None: PyYAML built without libyaml
if getattr(yaml, "__with_libyaml__", False):

    class _FastBoundedLoader(yaml.CSafeLoader):
        """The same loader on libyaml's C parser (about 10x faster; libyaml caps nesting
        itself); the limits are checked on the composed graph before anything is built."""

        def construct_document(self, node: yaml.Node) -> Any:
            _check_graph(node)
            return super().construct_document(node)

    _FastBoundedLoader.yaml_constructors = _BoundedLoader.yaml_constructors
    _FastBoundedLoader.yaml_implicit_resolvers = _BoundedLoader.yaml_implicit_resolvers
    _FAST_LOADER = _FastBoundedLoader


def yaml_load(text: str, fast: bool = False) -> Any:
    """Parse one YAML document with the bounded safe loader; raises ``yaml.YAMLError``.

    ``fast``: parse with libyaml where PyYAML has it (same limits, same values), falling back
    to the pure-Python loader for a document it refuses, so the message is the usual one. For
    the many files a report reads (every run's config.yaml)."""
    if len(text) > MAX_BYTES:
        raise YAMLLimitError(f"{len(text):,} characters; at most {MAX_BYTES:,} are read")
    if fast and _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass  # the slow loader says what is wrong, in its own words
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:  # deep nesting inside a flow collection the composer did not see
        raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """One short line saying what is wrong with a document (and where, when known)."""
    if isinstance(e, YAMLLimitError):
        return cut(str(e), 200)
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "could not determine a constructor" in str(e):
        problem = "YAML tags that construct Python objects are not allowed: " + problem
    return f"invalid YAML{where}: {cut(problem, 200)}"


def special_file(path: str | os.PathLike[str]) -> str | None:
    """What a path that exists but is no regular file or folder is ("a named pipe (FIFO)", "a
    device file", "a socket"): reading one may block forever. None for anything else."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def read_yaml(path: str | os.PathLike[str], fast: bool = False) -> Any:
    """Read one YAML file with the bounded loader; errors name the file (and the line). Only a
    regular file is opened (a FIFO or a device would block the read forever). ``fast``: as for
    ``yaml_load``."""
    path = Path(path)
    kind = special_file(path)
    if kind:
        raise ConfigError(f"{path}: not a regular file ({kind}); give a YAML file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more, whatever the file claims to be
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_BYTES // 1024} KiB; a YAML file read by "
            "mnist-hpc may be at most that (configs are a few KiB)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text (byte {e.start})") from None
    try:
        return yaml_load(text, fast)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_problem(e)}") from None
