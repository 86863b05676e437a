"""RunTrace.blocks() (workloads/runtrace.py): the lines read a block at a time are the lines text mode reads one at
a time (RunTrace._lines_one_by_one), with the same numbers, texts and errors at the same point of the reading,
wherever the blocks are cut."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from foliosim.workloads import runtrace
from foliosim.workloads.runtrace import RunTrace, RunTraceError, prepare

TRACES = Path(__file__).resolve().parents[1] / "examples" / "run-traces"
# what may end a line for text mode (universal newlines) or for str.splitlines, blanks, and other text
PIECES = ["\n", "\r", "\r\n", " ", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "é", "{", "ab", '"t":1', "\n\n"]


def _read(trace: RunTrace, one_by_one: bool) -> tuple[list[tuple[int, str]], str | None]:
    """The (line number, text) pairs read, then the error (or None)."""
    got: list[tuple[int, str]] = []
    try:
        for item in trace._lines_one_by_one() if one_by_one else trace.lines():
            got.append(item)
    except RunTraceError as exc:
        return got, str(exc)
    return got, None


def _same(path: Path) -> tuple[list[tuple[int, str]], str | None]:
    trace = RunTrace(path.name, path=path)
    want = _read(trace, True)
    assert _read(trace, False) == want
    blocks = list(trace.blocks()) if want[1] is None else []
    for _before, run in blocks:  # each block: non-blank lines in a row, numbered from before + 1
        assert run and all(line and not line.isspace() for line in run)
    assert [item for before, run in blocks for item in enumerate(run, before + 1)] == (want[0] if blocks else [])
    return want


@seed(13)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), gz=st.booleans(), read=st.integers(1, 9),
       inflate_in=st.integers(1, 9), hold=st.integers(0, 6), tail=st.sampled_from(["", "zeros", "junk", "member"]))
def test_blocks_are_the_lines_text_mode_reads(pieces: list[str], gz: bool, read: int, inflate_in: int, hold: int,
                                              tail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks (every cut falls inside lines, between \\r and \\n, inside a UTF-8 sequence): the same lines
    as text mode's, blank lines skipped but counted, a last line without a line feed kept; after the gzip stream,
    padding, bytes that are no gzip stream, or another member."""
    monkeypatch.setattr(runtrace, "READ_BYTES", read)
    monkeypatch.setattr(runtrace, "_INFLATE_IN", inflate_in)
    monkeypatch.setattr(runtrace, "_HOLD_BACK", hold)
    data = "".join(pieces).encode()
    path = tmp_path / ("t.gz" if gz else "t.txt")
    after = {"": b"", "zeros": b"\x00\x00", "junk": b"ab", "member": gzip.compress(b'\n{"t":2}')}[tail]
    path.write_bytes(gzip.compress(data) + after if gz else data)
    _same(path)


def _lines_of(n: int, rng: random.Random) -> bytes:
    """``n`` fault-like lines of varied lengths (some long), as the recorder writes them."""
    out = []
    for i in range(n):
        pad = "x" * rng.choice([0, 5, 40, 3000])
        out.append(json.dumps({"t": i, "ev": "fault", "pid": 1, "tid": 1, "addr": rng.randrange(1 << 40),
                               "kernel_ip": pad}, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("seed", range(6))
def test_broken_files_fail_at_the_same_line(seed: int, tmp_path: Path) -> None:
    """With the shipped block sizes: a gzip stream cut short, a corrupt byte, bytes that are not UTF-8, a second
    member, bytes after the stream, a CR line end at some point of a file of ~1 MiB: the same lines, then the same
    error, as text mode's reading."""
    rng = random.Random(seed)
    data = _lines_of(1500, rng)
    packed = gzip.compress(data)
    at, text_at = rng.randrange(len(packed) // 10, len(packed) - 8), rng.randrange(len(data))
    corrupt = bytearray(packed)
    corrupt[at] ^= 0x55
    cases: dict[str, bytes] = {
        "cut": packed[:at], "corrupt": bytes(corrupt), "trailer": packed[:-3] + bytes([packed[-3] ^ 1]) + packed[-2:],
        "utf8": gzip.compress(data[:text_at] + b"\xff" + data[text_at:]),
        "members": packed + gzip.compress(b'{"t":1}\n'), "after": packed + b"\x00\x00", "junk": packed + b"xy",
        "cr": gzip.compress(data[:text_at] + b"\r" + data[text_at:]),
        "plain-utf8": data[:text_at] + b"\xc3" + data[text_at:], "plain": data}
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        _lines, error = _same(path)
        if name in ("cut", "utf8", "junk", "plain-utf8"):
            assert error is not None, name


def test_corrupt_streams_everywhere(tmp_path: Path) -> None:
    """A corrupt byte at many places of a stream that inflates unevenly (text of random hex digits): the lines the
    blocks hand out before the error are never more than text mode's, whose reading loses up to 8 KiB before the
    point where inflating fails (the error would otherwise come from a line text mode never reached)."""
    rng = random.Random(7)
    data = "".join(f'{{"t":{i},"x":"{rng.getrandbits(rng.choice([8, 400, 4000])):x}"}}\n'
                   for i in range(1200)).encode()
    packed = gzip.compress(data)
    path = tmp_path / "c.gz"
    errors = 0
    for at in range(100, len(packed), len(packed) // 250):
        blob = bytearray(packed)
        blob[at] ^= 0xA5
        path.write_bytes(bytes(blob))
        errors += _same(path)[1] is not None
    assert errors > 100


@pytest.mark.parametrize("bad", [1500, 2300, 3999, 5000])
def test_lines_near_a_failure_are_held_back(bad: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the reading fails, the blocks hand out only lines ending _HOLD_BACK before the text read so far: the
    reading one line at a time (text mode reads 8 KiB at a time) has reached them too, so the error is its own."""
    monkeypatch.setattr(runtrace, "READ_BYTES", 1000)
    monkeypatch.setattr(runtrace, "_HOLD_BACK", 300)
    data = b"".join(b'{"t":%d}\n' % i for i in range(600))
    path = tmp_path / "u.gz"
    path.write_bytes(gzip.compress(data[:bad] + b"\xff" + data[bad:]))
    skips: list[int] = []
    one_by_one = RunTrace._lines_one_by_one

    def spy(self: RunTrace, skip: int = 0) -> Any:
        skips.append(skip)
        return one_by_one(self, skip)

    monkeypatch.setattr(RunTrace, "_lines_one_by_one", spy)
    with pytest.raises(RunTraceError, match="not UTF-8"):
        list(RunTrace("u", path=path).lines())
    handed = len(b"".join(data.splitlines(True)[:skips[0]]))
    assert skips and 0 < handed <= bad - 300


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "none.gz", tmp_path):
        assert _same(path)[1] is not None


def _outcome(trace: RunTrace) -> tuple[Any, ...]:
    conv = prepare(trace)
    items = list(conv.items())
    return conv.stats.to_json(), items, sorted(conv.racy), conv.lines


@pytest.mark.parametrize("name", ["sh-pipeline.trace.gz", "prefork-server.trace.gz", "stuck-bit.census.trace.gz"])
def test_conversion_is_the_same_with_small_blocks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped trace converted with blocks of a few lines (snapshot lines spanning many): the same items and
    figures as with the shipped sizes, and as a reading one line at a time."""
    path = TRACES / name
    want = _outcome(RunTrace.open(path))
    monkeypatch.setattr(runtrace, "READ_BYTES", 1000)
    monkeypatch.setattr(runtrace, "_INFLATE_IN", 97)
    monkeypatch.setattr(runtrace, "_HOLD_BACK", 300)
    assert _outcome(RunTrace.open(path)) == want
    monkeypatch.setattr(RunTrace, "blocks", lambda self: ((n - 1, [line]) for n, line in self._lines_one_by_one()))
    assert _outcome(RunTrace.open(path)) == want


def test_zlib_is_what_gzip_reads() -> None:
    """The inflater the blocks use reads the shipped traces as the gzip module does."""
    for path in sorted(TRACES.glob("*.gz"))[:3]:
        packed = path.read_bytes()
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert inflate.decompress(packed) + inflate.flush() == gzip.decompress(packed) and inflate.eof
