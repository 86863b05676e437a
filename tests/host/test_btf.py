"""The BTF reader: a synthetic blob exercising every kind, and the running kernel's vmlinux BTF."""

from __future__ import annotations

import os
import struct

import pytest

from foliosim.host import btf as B
from foliosim.host.btf import Btf
from foliosim.host.errors import HostError, HostUnavailable
from tests.conftest import live_unavailable


class _Blob:
    """Builds a little-endian BTF blob type by type (ids from 1, strings deduplicated)."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.offsets: dict[str, int] = {"": 0}
        self.types = bytearray()
        self.count = 0

    def s(self, name: str) -> int:
        if name not in self.offsets:
            self.offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        return self.offsets[name]

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"", kflag: bool = False) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kflag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def members(self, items: list[tuple[str, int, int]]) -> bytes:
        return b"".join(struct.pack("<III", self.s(n), t, o) for n, t, o in items)

    def blob(self, magic: int = B.BTF_MAGIC) -> bytes:
        header = struct.pack("<HBBIIIII", magic, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


def _int_enc(bits: int, signed: bool = False, offset: int = 0) -> bytes:
    return struct.pack("<I", (1 if signed else 0) << 24 | offset << 16 | bits)


@pytest.fixture(scope="module")
def synthetic() -> Btf:
    b = _Blob()
    t_int = b.add("int", B.KIND_INT, 0, 4, _int_enc(32, signed=True))  # 1
    t_ulong = b.add("unsigned long", B.KIND_INT, 0, 8, _int_enc(64))  # 2
    t_arr = b.add("", B.KIND_ARRAY, 0, 0, struct.pack("<III", t_int, t_int, 2))  # 3: int[2]
    # struct inner { int a; int b:3; int c:5; }  (kind_flag: bit offsets with bitfield sizes)
    t_inner = b.add("inner", B.KIND_STRUCT, 3, 8,
                    b.members([("a", t_int, 0), ("b", t_int, 3 << 24 | 32), ("c", t_int, 5 << 24 | 35)]),
                    kflag=True)  # 4
    t_union = b.add("", B.KIND_UNION, 2, 8, b.members([("x", t_ulong, 0), ("y", t_arr, 0)]))  # 5
    # struct outer { int head; union { unsigned long x; int y[2]; }; struct inner in; }
    t_outer = b.add("outer", B.KIND_STRUCT, 3, 24,
                    b.members([("head", t_int, 0), ("", t_union, 64), ("in", t_inner, 128)]))  # 6
    t_typedef = b.add("outer_t", B.KIND_TYPEDEF, 0, t_outer)  # 7
    t_const = b.add("", B.KIND_CONST, 0, t_typedef)  # 8
    b.add("colors", B.KIND_ENUM, 3, 4,
          struct.pack("<IiIiIi", b.s("RED"), 0, b.s("GREEN"), 1, b.s("ALIAS"), 1))  # 9
    b.add("big", B.KIND_ENUM64, 2, 8,
          struct.pack("<III", b.s("NEG"), 0xFFFFFFFE, 0xFFFFFFFF) + struct.pack("<III", b.s("HUGE"), 0, 1 << 8),
          kflag=True)  # 10
    t_ptr = b.add("", B.KIND_PTR, 0, t_outer)  # 11
    b.add("withptr", B.KIND_STRUCT, 2, 16, b.members([("p", t_ptr, 0), ("q", t_const, 64)]))  # 12 (q: const outer_t)
    t_proto = b.add("", B.KIND_FUNC_PROTO, 3, 0, struct.pack("<IIIIII", 0, t_ptr, 0, t_ptr, 0, t_int))  # 13
    t_pproto = b.add("", B.KIND_PTR, 0, t_proto)  # 14
    b.add("btf_trace_demo", B.KIND_TYPEDEF, 0, t_pproto)  # 15
    b.add("fwdonly", B.KIND_FWD, 0, 0)  # 16
    t_var = b.add("v", B.KIND_VAR, 0, t_int, struct.pack("<I", 1))  # 17
    b.add(".data", B.KIND_DATASEC, 1, 4, struct.pack("<III", t_var, 0, 4))  # 18
    b.add("double", B.KIND_FLOAT, 0, 8)  # 19
    b.add("tag", B.KIND_DECL_TAG, 0, t_outer, struct.pack("<i", -1))  # 20
    t_tt = b.add("user", B.KIND_TYPE_TAG, 0, t_int)  # 21
    b.add("f", B.KIND_FUNC, 0, t_proto)  # 22
    t_vol = b.add("", B.KIND_VOLATILE, 0, t_tt)  # 23
    b.add("", B.KIND_RESTRICT, 0, t_ptr)  # 24
    # kind_flag 0: a bitfield described by its INT encoding (3 bits) at member bit offset 8
    t_u3 = b.add("u3", B.KIND_INT, 0, 4, _int_enc(3))  # 25
    b.add("legacy", B.KIND_STRUCT, 2, 8, b.members([("bf", t_u3, 8), ("w", t_vol, 32)]))  # 26
    return Btf(b.blob(), "synthetic")


def test_synthetic_sizes_and_offsets(synthetic: Btf) -> None:
    assert synthetic.type_count == 26
    assert synthetic.struct_size("outer") == 24
    assert synthetic.struct_size("inner") == 8
    assert synthetic.member_offset("outer", "head") == 0
    # members of the anonymous union are found directly
    assert synthetic.member_offset("outer", "x") == 8
    assert synthetic.member_size("outer", "x") == 8
    assert synthetic.member_offset("outer", "y") == 8
    assert synthetic.member_offset("outer", "y[1]") == 12
    assert synthetic.member_size("outer", "y") == 8
    assert synthetic.member_size("outer", "y[0]") == 4
    assert synthetic.member_offset("outer", "in.a") == 16
    assert synthetic.member_offset("withptr", "q.in.a") == 8 + 16  # through const and typedef
    assert synthetic.member_size("withptr", "p") == 8
    assert synthetic.member_size("withptr", "q") == 24
    assert synthetic.member_size("legacy", "w") == 4  # volatile -> type_tag -> int


def test_synthetic_bitfields(synthetic: Btf) -> None:
    assert synthetic.member_bits("outer", "in.b") == (128 + 32, 3)
    assert synthetic.member_bits("outer", "in.c") == (128 + 35, 5)
    assert synthetic.member_bits("outer", "in.a") == (128, 32)
    with pytest.raises(HostError, match="bitfield at bit 163"):
        synthetic.member_offset("outer", "in.c")
    with pytest.raises(HostError, match="3-bit bitfield"):
        synthetic.member_size("outer", "in.b")
    assert synthetic.member_bits("legacy", "bf") == (8, 3)  # kind_flag 0: width from the INT encoding


def test_synthetic_errors_name_struct_and_member(synthetic: Btf) -> None:
    with pytest.raises(HostError, match=r"struct outer has no member 'nope'"):
        synthetic.member_offset("outer", "nope")
    with pytest.raises(HostError, match=r"struct outer\.in has no member 'zz'"):
        synthetic.member_offset("outer", "in.zz")
    with pytest.raises(HostError, match="index 2 out"):
        synthetic.member_offset("outer", "y[2]")
    with pytest.raises(HostError, match="no type 'absent'"):
        synthetic.struct_size("absent")
    with pytest.raises(HostError, match="no type 'fwdonly'"):
        synthetic.struct_size("fwdonly")  # a forward declaration has no layout
    with pytest.raises(HostError, match="not a struct or union"):
        synthetic.member_offset("outer", "head.x")
    with pytest.raises(HostError, match="no enumerator 'BLUE'"):
        synthetic.enum_value("colors", "BLUE")


def test_synthetic_enums(synthetic: Btf) -> None:
    assert synthetic.enum_value("colors", "GREEN") == 1
    assert synthetic.enum_value("colors", "ALIAS") == 1
    assert synthetic.enumerators("colors") == {"RED": 0, "GREEN": 1, "ALIAS": 1}
    assert synthetic.enum_value("big", "NEG") == -2
    assert synthetic.enum_value("big", "HUGE") == 1 << 40


def test_synthetic_tracepoint_args_and_spelling(synthetic: Btf) -> None:
    assert synthetic.tracepoint_args("demo") == ["struct outer *", "int"]
    assert synthetic.type_spelling(8) == "const outer_t"
    assert synthetic.type_spelling(0) == "void"


def test_rejects_bad_blobs(tmp_path: os.PathLike[str]) -> None:
    b = _Blob()
    b.add("int", B.KIND_INT, 0, 4, _int_enc(32))
    with pytest.raises(HostError, match="not BTF"):
        Btf(b.blob(magic=0x9FEB))
    b.add("weird", 31, 0, 0)
    with pytest.raises(HostError, match="unknown BTF kind 31"):
        Btf(b.blob())
    with pytest.raises(HostError, match="too short"):
        Btf(b"\x9f\xeb")
    with pytest.raises(HostUnavailable, match="no kernel BTF"):
        Btf.load(os.path.join(os.fspath(tmp_path), "missing"))


# --- the running kernel ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vmlinux() -> Btf:
    if not os.path.exists(B.VMLINUX_BTF):
        live_unavailable(f"{B.VMLINUX_BTF} missing")
    return Btf.load()


@pytest.mark.live
def test_vmlinux_loads_whole() -> None:
    if not os.path.exists(B.VMLINUX_BTF):
        live_unavailable(f"{B.VMLINUX_BTF} missing")
    btf = Btf.load()
    assert btf.member_offset("folio", "_mm_ids") > 0
    assert btf.type_count > 10_000


@pytest.mark.live
def test_vmlinux_folio_layout(vmlinux: Btf) -> None:
    page = vmlinux.struct_size("page")
    assert page in (64, 72, 80)  # one cache line, or more with debug options
    assert vmlinux.struct_size("folio") == 4 * page  # the folio overlays its head and three tail pages
    # struct page and the folio's head agree (include/linux/mm_types.h FOLIO_MATCH)
    for name in ("flags", "mapping", "_mapcount", "_refcount"):
        assert vmlinux.member_offset("folio", name) == vmlinux.member_offset("page", name)
    # the mapcount fields live in the first tail page, and _mm_ids right after the two slot mapcounts
    for name in ("_large_mapcount", "_nr_pages_mapped", "_entire_mapcount", "_pincount", "_mm_ids"):
        assert page <= vmlinux.member_offset("folio", name) < 2 * page, name
    assert vmlinux.member_size("folio", "_mm_ids") == 8
    assert vmlinux.member_size("folio", "_large_mapcount") == 4  # atomic_t
    assert vmlinux.member_size("folio", "_mm_id_mapcount") == 8
    assert vmlinux.member_offset("folio", "_mm_id_mapcount[1]") == vmlinux.member_offset("folio", "_mm_id_mapcount") + 4
    assert vmlinux.member_offset("folio", "_mm_id[0]") == vmlinux.member_offset("folio", "_mm_ids")
    assert vmlinux.member_size("folio", "_mm_id[1]") == 4  # mm_id_t: 31 id bits + 1 flag bit per slot
    assert vmlinux.member_offset("folio", "_mm_ids") == vmlinux.member_offset("folio", "_mm_id_mapcount") + 8
    assert vmlinux.member_offset("folio", "_flags_1") == page
    assert vmlinux.member_size("mm_struct", "mm_id") == 4
    assert vmlinux.member_offset("task_struct", "mm") > 0
    with pytest.raises(HostError, match=r"folio.*_no_such_field"):
        vmlinux.member_offset("folio", "_no_such_field")


@pytest.mark.live
def test_vmlinux_pageflags(vmlinux: Btf) -> None:
    flags = vmlinux.enumerators("pageflags")
    # PG_anon_exclusive is an alias enumerator on 6.18: same bit as PG_mappedtodisk (and PG_owner_2)
    assert vmlinux.enum_value("pageflags", "PG_anon_exclusive") == flags["PG_mappedtodisk"]
    assert 0 <= flags["PG_anon_exclusive"] < flags["__NR_PAGEFLAGS"]
    assert flags["PG_head"] != flags["PG_anon_exclusive"]


@pytest.mark.live
def test_vmlinux_tracepoints_and_bitfields(vmlinux: Btf) -> None:
    assert vmlinux.tracepoint_args("mm_page_alloc")[:2] == ["struct page *", "unsigned int"]
    assert vmlinux.tracepoint_args("sys_enter") == ["struct pt_regs *", "long int"]
    # x86 segment descriptor: an architectural bitfield layout (arch/x86/include/asm/desc_defs.h)
    assert vmlinux.member_bits("desc_struct", "dpl") == (45, 2)
    assert vmlinux.member_bits("desc_struct", "base2") == (56, 8)


def test_load_hands_out_a_parsed_file_again_until_the_file_changes(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(os.fspath(tmp_path), "btf")
    stamp = [1_700_000_000_000_000_000]

    def write(blob: bytes) -> None:
        with open(path, "wb") as f:
            f.write(blob)
        stamp[0] += 1_000_000_000  # a rewrite within one timestamp tick would keep the time: set it
        os.utime(path, ns=(stamp[0], stamp[0]))

    b = _Blob()
    b.add("int", B.KIND_INT, 0, 4, _int_enc(32))
    write(b.blob())
    first = Btf.load(path)
    assert Btf.load(path) is first  # parsed once
    assert first.type_count == 1
    b.add("long", B.KIND_INT, 0, 8, _int_enc(64))
    write(b.blob())
    second = Btf.load(path)
    assert second is not first and second.type_count == 2
    assert second.type_size(second.find("long", {B.KIND_INT})) == 8
    write(b.blob(magic=0x9FEB))  # as long as the good one, another time: refused, and not kept
    with pytest.raises(HostError, match="not BTF"):
        Btf.load(path)
    with pytest.raises(HostError, match="not BTF"):
        Btf.load(path)
    write(b.blob())
    third = Btf.load(path)
    assert third is not second and third.type_count == 2
    assert Btf.load(path) is third
