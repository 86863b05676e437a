"""The fast replay loop and trace generator compiled ahead of time: quick start-up without numba.

``foliosim fast-replay`` spends more time importing numba and loading its
cached kernels (about a third of a second) than replaying a million
operations. :func:`build` compiles :func:`foliosim.fast.kernels.replay_loop`
and :func:`foliosim.trace.genfast.generate_loop` (the same sources, through
numba's ``pycc``) into a small extension module that imports without numba;
:func:`load_replay_loop` / :func:`load_generate_loop` find it when it matches
the current sources, numpy and Python, and :func:`without_numba` imports the
Python modules around them without importing numba, since their numba
functions are then not called.

Build it once with ``python -m foliosim.replay_aot`` (needs numba, one to two
minutes); it lands next to numba's own cache in ``foliosim/fast/__pycache__``
(or in ``$FOLIOSIM_AOT_DIR``). This module imports neither numba nor
``foliosim.fast`` (whose package imports numba).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_FAST = Path(__file__).resolve().parent / "fast"
#: The sources whose change makes a built module stale.
SOURCES = (_FAST / "kernels.py", _FAST / "_jit.py", _FAST.parent / "trace" / "genfast.py")
PREFIX = "_foliosim_replay_aot_"

#: replay_loop's argument types for the arrays FastState and ColumnarTrace hold (all C-contiguous).
SIGNATURE = ("Tuple((i8, i8))(i8[::1], i8[::1], i8[:, ::1], i8[:, ::1], u1[::1], i4[::1], i4[::1], i4[:, ::1], "
             "i4[:, ::1], i8[:, ::1], u1[::1], i4[::1], i4[::1], u1[::1], i4[::1], i4[::1], i1[::1], i8, i8, b1, "
             "i8[:, ::1], i4[::1], i4[::1])")
#: generate_loop's argument types (as foliosim.trace.genfast.generate_columns allocates them).
GENERATE_SIGNATURE = ("i8(u4[::1], i8[::1], i8[::1], i8, i8, i8, i8, i8, i8, i8, i8, i8, i8[::1], i8[::1], f8[::1], "
                      "i8[:, :, ::1], i8[:, ::1], i8[:, ::1], i8[::1], i8[::1], i8[:, ::1], i8[::1], i1[::1], i8[::1], "
                      "i8[::1], i4[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], u1[::1], i4[::1], "
                      "i4[::1], u1[::1], i4[::1], i4[::1], i8)")


class AotBuildError(Exception):
    """The ahead-of-time module could not be built (numba missing, no compiler, unwritable folder)."""


def _cpu() -> str:
    """This CPU's model and feature flags: the modules are compiled for the host CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            wanted = {}
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags") and key not in wanted:
                    wanted[key] = value.strip()
                if len(wanted) == 2 or not line.strip():
                    break
        return "|".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    except OSError:
        return platform.processor()


def _key() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    digest.update(f"{np.__version__}|{sys.version}|{platform.machine()}|{_cpu()}|{SIGNATURE}|"
                  f"{GENERATE_SIGNATURE}".encode())
    return digest.hexdigest()[:16]


#: The built modules: one per exported function (numba types the two apart more reliably).
PARTS = ("replay", "generate")


def module_name(part: str = "replay") -> str:
    """The name of ``part``'s module for the current sources, numpy, Python and machine."""
    if part not in PARTS:
        raise ValueError(f"no ahead-of-time part {part!r}")
    return f"{PREFIX}{part}_{_key()}"


def cache_dirs() -> list[Path]:
    """Where built modules are looked for, first choice first."""
    override = os.environ.get("FOLIOSIM_AOT_DIR")
    if override:
        return [Path(override)]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foliosim"
    return [_FAST / "__pycache__", home]


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def find(part: str = "replay") -> Path | None:
    """The built module of ``part`` for the current sources, if there is one."""
    name = module_name(part) + _suffix()
    for folder in cache_dirs():
        path = folder / name
        if path.is_file():
            return path
    return None


ReplayLoop = Callable[..., tuple[int, int]]


def _load_module(part: str) -> Any:
    """The built module of ``part`` for the current sources, or None (not built, or it will not load)."""
    path = find(part)
    return None if path is None else _load_path(str(path))


@functools.cache
def _load_path(path: str) -> Any:
    """The extension module at ``path`` (loaded once per process), or None if it will not load."""
    name = Path(path).name[:-len(_suffix())]
    try:
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        if spec is None:
            return None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (ImportError, OSError):
        return None
    return module


def load_replay_loop() -> ReplayLoop | None:
    """The ahead-of-time ``replay_loop``, or None when it is not built for the current sources (or won't load)."""
    loop: Any = getattr(_load_module("replay"), "replay_loop", None)
    return loop if callable(loop) else None


def load_generate_loop() -> Callable[..., int] | None:
    """The ahead-of-time ``generate_loop`` of :mod:`foliosim.trace.genfast`, or None (as :func:`load_replay_loop`)."""
    loop: Any = getattr(_load_module("generate"), "generate_loop", None)
    return loop if callable(loop) else None


@contextmanager
def without_numba() -> Iterator[None]:
    """Import modules inside this block as if numba were not installed (their kernels stay plain Python).

    For the fast path's Python side (state arrays, export to model objects)
    when the replay loop itself comes from :func:`load_replay_loop`. Does
    nothing when numba is already imported.
    """
    if "numba" in sys.modules:
        yield
        return
    sys.modules["numba"] = None  # type: ignore[assignment]  # import numba -> ImportError
    try:
        yield
    finally:
        if sys.modules.get("numba", 0) is None:
            del sys.modules["numba"]


def build(verbose: bool = False) -> Path:
    """Compile the replay loop and the generator ahead of time (needs numba and a C compiler).

    Returns the replay module's path (the generator's lies beside it).

    Written to a temporary name and renamed, so a concurrent run never loads a
    half-written file; older builds in the same folder are removed.
    """
    import tempfile  # here, not at the top: loading a built module needs none of it (start-up)

    try:
        import numba.pycc
    except ImportError as exc:
        raise AotBuildError(f"numba is needed to build the ahead-of-time replay loop ({exc})") from None
    from foliosim.fast import kernels
    from foliosim.trace import genfast

    exports: dict[str, tuple[str, str, Any]] = {
        "replay": ("replay_loop", SIGNATURE, kernels.replay_loop),
        "generate": ("generate_loop", GENERATE_SIGNATURE, genfast.generate_loop),
    }
    errors = []
    for folder in cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            targets = []
            for part in PARTS:  # one module each, in this order
                name = module_name(part)
                export, signature, function = exports[part]
                with tempfile.TemporaryDirectory(dir=folder, prefix=".aot-build-") as tmp:
                    cc: Any = numba.pycc.CC(name)  # type: ignore[attr-defined,no-untyped-call]
                    cc.output_dir = tmp
                    cc.use_nrt = False  # the kernels allocate nothing
                    cc.target_cpu = "host"  # as numba's JIT compiles (the key names this CPU)
                    cc.verbose = verbose
                    cc.export(export, signature)(function.py_func)  # the Python source, compiled by pycc
                    cc.compile()
                    built = Path(tmp) / (name + _suffix())
                    target = folder / built.name
                    os.replace(built, target)
                    targets.append(target)
            for old in folder.glob(PREFIX + "*"):
                if old not in targets and old.is_file():
                    old.unlink()
            return targets[0]
        except OSError as exc:
            errors.append(f"{folder}: {exc.strerror or exc}")
        except Exception as exc:  # pycc reports compiler and linker failures as assorted exceptions
            errors.append(f"{folder}: {type(exc).__name__}: {exc}")
    raise AotBuildError("cannot build the ahead-of-time replay loop: " + "; ".join(errors))


def main() -> None:
    """``python -m foliosim.replay_aot``: build (or rebuild) the module and say where it is."""
    try:
        path = build(verbose="-v" in sys.argv[1:])
    except AotBuildError as exc:
        print(f"foliosim.replay_aot: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"foliosim.replay_aot: built {path} and {path.with_name(module_name('generate') + _suffix())}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
