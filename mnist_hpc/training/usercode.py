"""The user's own model code: read a model file, run it, and report its mistakes in the user's terms.

A custom model is a class or function in a Python file (``model.file``, ``model.factory``,
``model.args``). The file is read once, hashed (sha256) and compiled from exactly the bytes that
were hashed, so the run folder's copy, its digest and the code that ran are the same thing.
Mistakes in that code (a missing file, a syntax error, a failing import, a misspelt factory, an
exception in ``__init__`` or ``forward``) become a ``UserCodeError``: one line saying what went
wrong, plus the traceback frames of the user's file alone (``detail``), exit 2.

Code runs only from files the user pointed at: a config's ``model.file``, or a run folder or
checkpoint that this user trained here (its code's digest is in the trust list,
``$XDG_CACHE_HOME/mnist-hpc/trusted-code``) or opened with ``--trust-code`` (``trust_code=True``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from mnist_hpc.config.validate import did_you_mean
from mnist_hpc.errors import ConfigError

SNAPSHOT_DIR = "model"  # the run folder's copy of the model file: <run>/model/<file name>


class UserCodeError(ConfigError):
    """A mistake in the user's model code: one line, then ``detail`` (the user's own frames)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class ModelCode:
    """One model file as it was read: its path, text and sha256."""

    path: Path
    text: str
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def record(self, factory: str) -> dict:
        """What checkpoints and run.json keep of the code (checkpoints keep the text too)."""
        return {"file": self.name, "factory": factory, "sha256": self.sha256, "origin": str(self.path)}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_code(path, key: str = "model.file") -> ModelCode:
    """The model file at ``path``, read once; a missing or unreadable one is one line."""
    p = Path(os.path.expanduser(str(path)))
    try:
        if not p.is_file():
            why = "is a folder" if p.is_dir() else "not found"
            raise UserCodeError(
                f"{key}: {path}: {why}; point it at the Python file that defines your network"
            )
        raw = p.read_bytes()
    except OSError as e:
        raise UserCodeError(f"{key}: {path}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserCodeError(f"{key}: {path}: not UTF-8 text; a model file is Python source") from None
    return ModelCode(p.resolve(), text, hashlib.sha256(raw).hexdigest())


def _frames(exc: BaseException, code: ModelCode) -> str:
    """The traceback frames that are in the user's file, formatted like Python's."""
    mine = [f for f in traceback.extract_tb(exc.__traceback__) if _same(f.filename, code.path)]
    if not mine:
        return ""
    return "Traceback (your code):\n" + "".join(traceback.format_list(mine)).rstrip()


def _same(filename: str, path: Path) -> bool:
    try:
        return Path(filename).resolve() == path
    except (OSError, ValueError):
        return False


def _text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


_MODULES: dict[str, types.ModuleType] = {}  # sha256 -> the module run from that code (one per process)


def load_module(code: ModelCode) -> types.ModuleType:
    """Run the file's code as a module (once per process and digest); its errors in its terms."""
    if code.sha256 in _MODULES:
        return _MODULES[code.sha256]
    shown = _shown(code.path)
    try:
        compiled = compile(code.text, str(code.path), "exec")
    except SyntaxError as e:
        line = (e.text or "").rstrip("\n")
        caret = f"\n    {' ' * max((e.offset or 1) - 1, 0)}^" if line and e.offset else ""
        detail = (
            f'  File "{code.path}", line {e.lineno}\n    {line.strip() if not caret else line}{caret}'
            if line
            else ""
        )
        raise UserCodeError(f"{shown} line {e.lineno}: {type(e).__name__}: {e.msg}", detail) from None
    name = f"mnist_hpc_user_{code.path.stem}_{code.sha256[:12]}"
    module = types.ModuleType(name)
    module.__file__ = str(code.path)
    sys.modules[name] = module  # dataclasses, pickling and typing look classes up by module
    try:
        exec(compiled, module.__dict__)
    except ImportError as e:
        sys.modules.pop(name, None)
        raise UserCodeError(
            f"{shown}: an import in the model file failed: {_text(e)} (a model file may "
            f"import installed packages; keep the network in this one file)",
            _frames(e, code),
        ) from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise UserCodeError(f"{shown}: running the model file failed: {_text(e)}", _frames(e, code)) from None
    _MODULES[code.sha256] = module
    return module


def _shown(path: Path) -> str:
    """A path as the user knows it: relative to the working directory where that is shorter."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if len(rel) < len(str(path)) else str(path)


def find_factory(code: ModelCode, factory: str):
    module = load_module(code)
    obj = module.__dict__.get(factory)
    if obj is None or not callable(obj):
        names = [
            k
            for k, v in module.__dict__.items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
        what = "is not callable" if obj is not None else "not found"
        listed = (
            f"; the file defines {', '.join(names[:12])}"
            if names
            else "; the file defines no class or function"
        )
        raise UserCodeError(
            f"model.factory: {factory!r} {what} in {_shown(code.path)}{did_you_mean(factory, names)}{listed}"
        )
    return obj


def call_user(fn, what: str, code: ModelCode | None, *args, **kwargs):
    """``fn(*args, **kwargs)``, with an exception raised by the user's code as a UserCodeError."""
    try:
        return fn(*args, **kwargs)
    except UserCodeError:
        raise
    except Exception as e:
        detail = _frames(e, code) if code else ""
        where = f" ({_shown(code.path)})" if code else ""
        raise UserCodeError(f"{what}{where} raised {_text(e)}", detail) from None


# --------------------------------------------------------------------------- trust


def _trust_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-hpc" / "trusted-code"


def trust(code_or_sha, origin: str = "") -> None:
    """Remember that this user ran (or chose to trust) this code. Best effort: a read-only home
    (Trillium's $HOME inside a job) only means the run folder asks for --trust-code elsewhere."""
    sha = code_or_sha if isinstance(code_or_sha, str) else code_or_sha.sha256
    origin = origin or ("" if isinstance(code_or_sha, str) else str(code_or_sha.path))
    if is_trusted(sha):
        return
    try:
        f = _trust_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "a", encoding="utf-8") as out:
            out.write(f"{sha}  {origin}\n")
    except OSError:
        pass


def is_trusted(sha: str) -> bool:
    try:
        with open(_trust_file(), encoding="utf-8") as f:
            return any(line.split(" ", 1)[0] == sha for line in f)
    except OSError:
        return False


def code_from_record(
    record: dict, text: str | None, where, *, run_dir: Path | None = None, trust_code: bool = False
) -> ModelCode:
    """The code a checkpoint or run folder carries, ready to run: the run folder's copy when its
    digest matches, else the checkpoint's text in the cache; refused unless trusted."""
    sha = str(record.get("sha256", ""))
    name = os.path.basename(str(record.get("file") or "model.py")) or "model.py"
    code = None
    if run_dir is not None and (Path(run_dir) / SNAPSHOT_DIR / name).is_file():
        candidate = read_code(Path(run_dir) / SNAPSHOT_DIR / name)
        if candidate.sha256 == sha:
            code = candidate
    if code is None:
        if text is None or sha256_text(text) != sha:
            raise UserCodeError(
                f"{where}: the model's source code ({name}, sha256 {sha[:12]}) is missing or "
                f"does not match its digest; train it again from its config, or restore "
                f"{Path(run_dir or '.') / SNAPSHOT_DIR / name}"
            )
        cache = _trust_file().parent / "code" / sha[:16]
        path = cache / name
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        code = ModelCode(path.resolve(), text, sha)
    if not (trust_code or is_trusted(sha)):
        raise UserCodeError(
            f"{where} carries model code ({name}, sha256 {sha[:12]}) that was not run by you on this machine; "
            f"loading the model executes it: read {code.path}, then pass --trust-code "
            f"(Python: trust_code=True)"
        )
    if trust_code:
        trust(sha, str(record.get("origin", "")))
    return code
