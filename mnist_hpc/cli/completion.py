"""Shell completion of the values click cannot guess: config names, cluster names, ``--set`` keys.

Click completes commands and options by itself once the shell loads its script::

    eval "$(_MNIST_HPC_COMPLETE=bash_source mnist-hpc)"    # bash (zsh: zsh_source; fish: fish_source)

The completers here are attached to arguments and options with ``shell_complete=``: CONFIG
gets the shipped config names and the YAML files below the current folder, sweep files the
YAML files, ``--cluster`` the cluster profiles (the user's included) and ``--set`` the dotted
keys of the config schema, the current model's parameters among them (``optim.lr=``). Each TAB
runs the program, so nothing here imports torch, and a completer that fails offers nothing
rather than an error. The bash and zsh scripts are click's, except that a key ending in ``=``
is not followed by a space (fish does that by itself).
"""

from __future__ import annotations

import os
from pathlib import Path

from click.shell_completion import BashComplete, CompletionItem, ZshComplete, add_completion_class

PROG = "mnist-hpc"
COMPLETE_VAR = "_MNIST_HPC_COMPLETE"  # click's name for it: _<PROG>_COMPLETE
MAX_FILES = 200  # YAML files offered at most (a home folder can hold thousands)
MAX_DEPTH = 3  # folders below the current one searched for YAML files
_SKIP = {"runs", "node_modules", "__pycache__", "site-packages", "data"}


def _quiet(completer):
    """A completer that offers nothing instead of a traceback when anything goes wrong."""

    def safe(ctx, param, incomplete):
        try:
            return completer(ctx, param, incomplete)
        except Exception:
            return []

    safe.__name__ = completer.__name__
    safe.__doc__ = completer.__doc__
    return safe


# --------------------------------------------------------------------------- files and configs


def yaml_files(incomplete: str, root: Path = Path(".")) -> list[str]:
    """The ``*.yaml``/``*.yml`` files whose path starts with ``incomplete``: in the folder it
    names and up to ``MAX_DEPTH`` folders below (hidden folders, runs/ and data/ skipped)."""
    folder, _, _ = incomplete.rpartition("/")
    start = Path(folder or ".") if Path(folder).is_absolute() else root / (folder or ".")
    if folder and not start.is_dir():
        return []
    found: list[str] = []
    prefix = f"{folder}/" if folder else ""
    for dirpath, dirnames, filenames in os.walk(start):
        rel = Path(dirpath).relative_to(start)
        depth = 0 if str(rel) == "." else len(rel.parts)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in _SKIP and depth < MAX_DEPTH
        )
        for name in sorted(filenames):
            if name.endswith((".yaml", ".yml")):
                path = prefix + (name if depth == 0 else f"{rel.as_posix()}/{name}")
                if path.startswith(incomplete):
                    found.append(path)
                    if len(found) >= MAX_FILES:
                        return found
    return found


@_quiet
def complete_yaml(ctx, param, incomplete: str) -> list[CompletionItem]:
    """YAML files (sweep files, config files)."""
    return [CompletionItem(path) for path in yaml_files(incomplete)]


@_quiet
def complete_config(ctx, param, incomplete: str) -> list[CompletionItem]:
    """CONFIG: the shipped config names (with their purpose), then YAML files."""
    from mnist_hpc import api

    names = [
        CompletionItem(name, help=purpose or None)
        for name, purpose in api.list_configs().configs.items()
        if name.startswith(incomplete)
    ]
    return names + [CompletionItem(path) for path in yaml_files(incomplete)]


# --------------------------------------------------------------------------- clusters


@_quiet
def complete_cluster(ctx, param, incomplete: str) -> list[CompletionItem]:
    """--cluster: the profiles (built-in and the user's ~/.config/mnist-hpc/clusters.yaml)."""
    from mnist_hpc import api

    return [
        CompletionItem(name, help=about or None)
        for name, about in api.list_clusters().items()
        if name.startswith(incomplete.lower())
    ]


# --------------------------------------------------------------------------- --set keys


def current_model(params: dict) -> str | None:
    """The model the command line is about: the last ``--set model.name=...`` given, else the
    config's (CONFIG, or a sweep file's base config); None when it cannot be told."""
    for text in reversed(params.get("overrides") or ()):
        key, _, value = text.partition("=")
        if key.strip() == "model.name":
            return value.strip()
    from mnist_hpc import api

    return api.config_model(params.get("config") or params.get("config_file"), params.get("sweep_file"))


def rejoin(words: list[str]) -> list[str]:
    """Undo bash's splitting at ``=`` and ``:`` (COMP_WORDBREAKS): ``model.name``, ``=``, ``mlp``
    is the one word ``model.name=mlp`` typed."""
    out: list[str] = []
    glue = False
    for word in words:
        if word in ("=", ":") and out:
            out[-1] += word
            glue = True
        elif glue:
            out[-1] += word
            glue = False
        else:
            out.append(word)
    return out


def typed_params(ctx) -> dict:
    """The parameters typed so far on the command line being completed.

    While the value of an option is completed, click's context holds none of them (the option
    without its value stops its parsing), so the words the shell passed are parsed again here,
    without that option; outside a completion run (no words from a shell): ``ctx.params``."""
    from click.shell_completion import get_completion_class

    shell = os.environ.get(COMPLETE_VAR, "").partition("_")[0]
    cls = get_completion_class(shell) if shell else None
    if cls is None:
        return ctx.params
    words, _ = cls(ctx.command, {}, PROG, COMPLETE_VAR).get_completion_args()
    args = rejoin(words)[len(ctx.command_path.split()) - 1 :]  # after the (sub)command's own name
    if args and args[-1].startswith("-"):
        args = args[:-1]  # the option whose value is being completed
    with ctx.command.make_context(ctx.info_name, args, parent=ctx.parent, resilient_parsing=True) as sub:
        return sub.params


@_quiet
def complete_set(ctx, param, incomplete: str) -> list[CompletionItem]:
    """--set: ``KEY=`` for the config's dotted keys (the current model's parameters among them)."""
    key = incomplete.partition("=")[0]
    from mnist_hpc import api

    if "=" in incomplete:
        return []  # a value: nothing to offer
    try:
        model = current_model(typed_params(ctx))
    except Exception:
        model = None
    return [
        CompletionItem(f"{k}=", help=comment or None)
        for k, comment in api.config_keys(model).items()
        if k.startswith(key)
    ]


# --------------------------------------------------------------------------- the shell scripts


class _Bash(BashComplete):
    """Click's bash script, with no space after a ``KEY=`` completion."""

    source_template = BashComplete.source_template.replace(
        "            COMPREPLY+=($value)\n",
        "            COMPREPLY+=($value)\n            [[ $value == *= ]] && compopt -o nospace\n",
    )


class _Zsh(ZshComplete):
    """Click's zsh script, with no space after a ``KEY=`` completion."""

    source_template = ZshComplete.source_template.replace(
        "        _describe -V unsorted completions_with_descriptions -U\n",
        "        local -a open=(${(M)completions_with_descriptions:#*=:*})\n"
        "        local -a closed=(${completions_with_descriptions:#*=:*})\n"
        "        [ -n \"$open\" ] && _describe -V unsorted open -U -S ''\n"
        '        [ -n "$closed" ] && _describe -V unsorted closed -U\n',
    ).replace(
        "        compadd -U -V unsorted -a completions\n",
        "        local -a bare_open=(${(M)completions:#*=}) bare=(${completions:#*=})\n"
        "        [ -n \"$bare_open\" ] && compadd -U -V unsorted -S '' -a bare_open\n"
        '        [ -n "$bare" ] && compadd -U -V unsorted -a bare\n',
    )


add_completion_class(_Bash, "bash")
add_completion_class(_Zsh, "zsh")
