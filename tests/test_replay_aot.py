"""The ahead-of-time replay loop (foliosim.replay_aot): lookup, the numba-free import, and (slow) a real build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim import replay_aot
from foliosim.trace.columnar import from_ops, generated_columnar, read_npz, write_npz
from foliosim.trace.generate import TraceSpec

ROOT = Path(__file__).resolve().parents[1]


def _env(aot_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FOLIOSIM_AOT_DIR"] = str(aot_dir)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_without_numba_imports_the_fast_path_as_plain_python_and_restores() -> None:
    code = ("import sys\n"
            "from foliosim.replay_aot import without_numba\n"
            "with without_numba():\n"
            "    import foliosim.fast.replay as r\n"
            "    import foliosim.fast as f\n"
            "print(f.HAVE_NUMBA, 'numba' in sys.modules, sys.modules.get('numba', 0))\n"
            "import numba\n"
            "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_env(Path("/nonexistent"))).stdout.split()
    assert out == ["False", "False", "0", "True"]


def test_nothing_built_means_no_loop_and_the_name_follows_the_sources(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLIOSIM_AOT_DIR", str(tmp_path))
    assert replay_aot.cache_dirs() == [tmp_path]
    assert replay_aot.find() is None and replay_aot.load_replay_loop() is None
    name = replay_aot.module_name()
    assert name.startswith(replay_aot.PREFIX) and name.isidentifier()
    src = tmp_path / "kernels.py"
    src.write_text("x = 1\n")
    monkeypatch.setattr(replay_aot, "SOURCES", (src,))
    first = replay_aot.module_name()
    src.write_text("x = 2\n")
    assert replay_aot.module_name() != first
    # A file under the current name that is not a loadable module is ignored, not an error.
    (tmp_path / (replay_aot.module_name() + replay_aot._suffix())).write_bytes(b"not an ELF file")
    assert replay_aot.find() is not None and replay_aot.load_replay_loop() is None


def test_fast_replay_uses_the_loop_it_is_given() -> None:
    from foliosim.fast import kernels
    from foliosim.fast.replay import FastReplay

    spec = TraceSpec(n_ops=2000, n_folios=4, order=3, n_mms=3, seed=2)
    trace = generated_columnar(spec)
    calls: list[int] = []

    def loop(*args: object) -> tuple[int, int]:
        calls.append(1)
        return kernels.replay_loop(*args)  # type: ignore[arg-type]

    mine = list(FastReplay(trace, loop=loop).records())
    assert calls and mine == list(FastReplay(trace).records())
    calls.clear()
    assert list(FastReplay(trace, loop=loop).records(final_only=True)) == list(FastReplay(trace).records(
        final_only=True))
    assert calls


@pytest.mark.slow
def test_built_module_replays_like_the_jit_without_importing_numba(tmp_path: Path) -> None:
    env = _env(tmp_path / "aot")
    subprocess.run([sys.executable, "-m", "foliosim.replay_aot"], check=True, env=env, capture_output=True)
    assert len(list((tmp_path / "aot").glob(replay_aot.PREFIX + "*"))) == 2  # replay and generate
    spec = TraceSpec(n_ops=20_000, n_folios=8, order=4, n_mms=3, seed=5)
    trace = generated_columnar(spec)
    good = tmp_path / "good.npz"
    write_npz(trace, str(good))
    bad_ops = [trace.op(i) for i in range(len(trace))]
    bad_ops.insert(500, bad_ops[400])  # a repeated op: typically rejected (unmap of nothing, mm_new twice...)
    bad = tmp_path / "bad.npz"
    write_npz(from_ops([op for op in bad_ops if op is not None]), str(bad))
    for path, args in ((good, ["--final-only"]), (good, []), (bad, ["--keep-going"]), (bad, ["--final-only"])):
        cmd = [sys.executable, "-X", "importtime", "-m", "foliosim", "fast-replay", *args, str(path)]
        aot = subprocess.run(cmd, capture_output=True, text=True, env=env)
        jit = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "none"))
        assert aot.returncode == jit.returncode, (path, args)
        assert aot.stdout == jit.stdout, (path, args)
        assert "numba.core" not in aot.stderr and "numba.core" in jit.stderr  # (a blocked "numba" is listed)
        assert aot.stdout and all(isinstance(json.loads(line), dict) for line in aot.stdout.splitlines()[:5])
    # The generator's module: trace-generate without numba writes what the pure-Python reference writes.
    out = {}
    for engine, where in (("auto", env), ("reference", _env(tmp_path / "none"))):
        dest = tmp_path / f"gen-{engine}.npz"
        cmd = [sys.executable, "-X", "importtime", "-m", "foliosim", "trace-generate", str(dest), "--ops", "20000",
               "--seed", "9", "--engine", engine]
        done = subprocess.run(cmd, capture_output=True, text=True, env=where)
        assert done.returncode == 0, done.stderr[-2000:]
        if engine == "auto":
            assert "numba.core" not in done.stderr
        out[engine] = read_npz(str(dest))
    for name in ("kind", "folio", "mm", "level", "page", "nr", "order", "line"):
        assert (getattr(out["auto"], name) == getattr(out["reference"], name)).all(), name
