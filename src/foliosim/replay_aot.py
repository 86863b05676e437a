"""The fast replay loop compiled ahead of time: quick start-up for ``foliosim fast-replay``.

``foliosim fast-replay`` spends more time importing numba and loading its
cached kernels (about a third of a second) than replaying a million
operations. :func:`build` compiles :func:`foliosim.fast.kernels.replay_loop`
(the same source, through numba's ``pycc``) into a small extension module that
imports without numba; :func:`load_replay_loop` finds it when it matches the
current kernels, numpy and Python, and :func:`without_numba` imports the fast
path's Python modules without importing numba, since their kernels are then
not called.

Build it once with ``python -m foliosim.replay_aot`` (needs numba, one to two
minutes); it lands next to numba's own cache in ``foliosim/fast/__pycache__``
(or in ``$FOLIOSIM_AOT_DIR``). This module imports neither numba nor
``foliosim.fast`` (whose package imports numba).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_FAST = Path(__file__).resolve().parent / "fast"
#: The sources whose change makes a built module stale.
SOURCES = (_FAST / "kernels.py", _FAST / "_jit.py")
PREFIX = "_foliosim_replay_aot_"

#: replay_loop's argument types for the arrays FastState and ColumnarTrace hold (all C-contiguous).
SIGNATURE = ("Tuple((i8, i8))(i8[::1], i8[::1], i8[:, ::1], i8[:, ::1], u1[::1], i4[::1], i4[::1], i4[:, ::1], "
             "i4[:, ::1], i8[:, ::1], u1[::1], i4[::1], i4[::1], u1[::1], i4[::1], i4[::1], i1[::1], i8, i8, b1, "
             "i8[:, ::1], i4[::1], i4[::1])")


class AotBuildError(Exception):
    """The ahead-of-time module could not be built (numba missing, no compiler, unwritable folder)."""


def module_name() -> str:
    """The module's name for the current kernel sources, numpy, Python and machine."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    digest.update(f"{np.__version__}|{sys.version}|{platform.machine()}|{SIGNATURE}".encode())
    return PREFIX + digest.hexdigest()[:16]


def cache_dirs() -> list[Path]:
    """Where built modules are looked for, first choice first."""
    override = os.environ.get("FOLIOSIM_AOT_DIR")
    if override:
        return [Path(override)]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foliosim"
    return [_FAST / "__pycache__", home]


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def find() -> Path | None:
    """The built module for the current sources, if there is one."""
    name = module_name() + _suffix()
    for folder in cache_dirs():
        path = folder / name
        if path.is_file():
            return path
    return None


ReplayLoop = Callable[..., tuple[int, int]]


def load_replay_loop() -> ReplayLoop | None:
    """The ahead-of-time ``replay_loop``, or None when it is not built for the current sources (or won't load)."""
    path = find()
    if path is None:
        return None
    name = path.name[:-len(_suffix())]
    try:
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
        if spec is None:
            return None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (ImportError, OSError):
        return None
    loop: Any = getattr(module, "replay_loop", None)
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
    """Compile the replay loop ahead of time (needs numba and a C compiler); the module's path.

    Written to a temporary name and renamed, so a concurrent run never loads a
    half-written file; older builds in the same folder are removed.
    """
    try:
        import numba.pycc
    except ImportError as exc:
        raise AotBuildError(f"numba is needed to build the ahead-of-time replay loop ({exc})") from None
    from foliosim.fast import kernels

    name = module_name()
    errors = []
    for folder in cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".aot-build-") as tmp:
                cc: Any = numba.pycc.CC(name)  # type: ignore[attr-defined,no-untyped-call]
                cc.output_dir = tmp
                cc.use_nrt = False  # the kernels allocate nothing
                cc.verbose = verbose
                loop: Any = kernels.replay_loop
                cc.export("replay_loop", SIGNATURE)(loop.py_func)  # the Python source, compiled by pycc
                cc.compile()
                built = Path(tmp) / (name + _suffix())
                target = folder / built.name
                os.replace(built, target)
            for old in folder.glob(PREFIX + "*"):
                if old.name != target.name and old.is_file():
                    old.unlink()
            return target
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
    print(f"foliosim.replay_aot: built {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
