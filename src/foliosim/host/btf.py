"""A small reader of the kernel's BTF type information (/sys/kernel/btf/vmlinux).

The format is the one documented in Documentation/bpf/btf.rst (include/uapi/linux/btf.h): a header, a type
section of variable-length records whose ids start at 1, and a string section. Only what the host layer needs is
exposed: struct sizes, member offsets (found through anonymous unions and structs), member sizes and enumerator
values. Parsing is lazy: one pass records where each type starts; names are indexed on first use.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
from array import array
from dataclasses import dataclass

from foliosim.host.errors import HostError, HostUnavailable, os_error

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F

# Kinds (include/uapi/linux/btf.h, BTF_KIND_*).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

_TYPE_HEADER = struct.Struct("<III")  # name_off, info, size|type
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len

# Bytes that follow the 12-byte type header: (fixed, per vlen item).
_EXTRA: dict[int, tuple[int, int]] = {
    KIND_INT: (4, 0),
    KIND_PTR: (0, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0),
    KIND_CONST: (0, 0),
    KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0),
    KIND_TYPE_TAG: (0, 0),
    KIND_ENUM64: (0, 12),
}

# Kinds that only qualify or rename another type (followed when resolving a member's type).
_MODIFIERS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
_COMPOSITES = frozenset({KIND_STRUCT, KIND_UNION})
_PATH_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")
_POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)

#: path -> (the file's identity when read, its parsed BTF): what :meth:`Btf.load` hands out again
_LOADED: dict[str, tuple[tuple[int, int, int, int], Btf]] = {}


@dataclass(frozen=True, slots=True)
class _Member:
    """One member found in a struct/union: where it starts (bits from the outer struct), bitfield width, type."""

    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield
    type_id: int


class Btf:
    """Parsed BTF of one blob (normally the running kernel's vmlinux)."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        """Parse the header and record where every type record starts (one pass; names indexed lazily)."""
        self.source = source
        if len(data) < _HEADER.size:
            raise HostError(f"{source}: BTF blob too short ({len(data)} bytes)")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise HostError(f"{source}: not BTF (magic {magic:#x}; big-endian BTF is not supported)")
        if version != 1:
            raise HostError(f"{source}: BTF version {version} not supported")
        self._data = data
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        if self._types_end > len(data) or self._str_end > len(data):
            raise HostError(f"{source}: BTF sections extend past the end of the blob")
        self._offsets = self._index_types()
        self._by_name: dict[str, list[int]] | None = None

    @classmethod
    def load(cls, path: str = VMLINUX_BTF) -> Btf:
        """Read and parse the BTF file at ``path``; HostUnavailable when the kernel exposes none.

        A parsed file is handed out again, to every caller in this process, while the file is the same one (device,
        inode, size and modification time unchanged): the running kernel's BTF does not change, and every reader
        the live layer opens (the capability probe, the folio reader, the task reader) parsed its ~5 MB again, ~0.3 s
        each. A :class:`Btf` is read-only once made (its name index is built once, the same whoever builds it).
        """
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                known = _LOADED.get(path)
                if known is not None and known[0] == identity:
                    return known[1]
                data = f.read()
        except FileNotFoundError:
            raise HostUnavailable(f"{path}: no kernel BTF (needs CONFIG_DEBUG_INFO_BTF=y)") from None
        except PermissionError as exc:
            raise HostUnavailable(f"{path}: not readable ({exc.strerror})") from None
        except OSError as exc:
            raise os_error(path, exc) from None
        btf = cls(data, path)
        _LOADED[path] = (identity, btf)
        return btf

    # -- raw records -------------------------------------------------------------------------------------------

    def _index_types(self) -> array[int]:
        """Offsets of type records, indexed by type id (id 0 = void has a dummy entry)."""
        data = self._data
        unpack = _TYPE_HEADER.unpack_from
        extra = _EXTRA
        offsets = array("Q", [0])
        append = offsets.append
        off = self._types_start
        end = self._types_end
        while off < end:
            append(off)
            _name, info, _size = unpack(data, off)
            kind = (info >> 24) & 0x1F
            try:
                fixed, per_item = extra[kind]
            except KeyError:
                raise HostError(f"{self.source}: unknown BTF kind {kind} at type id {len(offsets) - 1}") from None
            off += 12 + fixed + per_item * (info & 0xFFFF)
        if off != end:
            raise HostError(f"{self.source}: BTF type section is truncated")
        return offsets

    @property
    def type_count(self) -> int:
        """Number of types (ids 1 .. type_count)."""
        return len(self._offsets) - 1

    def _record(self, type_id: int) -> tuple[int, int, int, bool, int, int]:
        """(offset, kind, vlen, kind_flag, name_off, size_or_type) of a type record."""
        if not 0 < type_id < len(self._offsets):
            raise HostError(f"{self.source}: BTF type id {type_id} out of range")
        off = self._offsets[type_id]
        name_off, info, size_or_type = _TYPE_HEADER.unpack_from(self._data, off)
        return off, (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), name_off, size_or_type

    def _string(self, name_off: int) -> str:
        start = self._str_start + name_off
        if not self._str_start <= start < self._str_end:
            raise HostError(f"{self.source}: BTF string offset {name_off} out of range")
        end = self._data.index(b"\0", start, self._str_end)
        return self._data[start:end].decode("utf-8", "replace")

    def type_name(self, type_id: int) -> str:
        """The type's name ('' for anonymous types and void)."""
        if type_id == 0:
            return ""
        return self._string(self._record(type_id)[4])

    def type_kind(self, type_id: int) -> int:
        """The type's BTF kind (KIND_*)."""
        return self._record(type_id)[1]

    def _name_index(self) -> dict[str, list[int]]:
        """Name -> type ids, built on first use: one pass over the type headers, strings decoded once per name."""
        if self._by_name is None:
            data = self._data
            unpack = _TYPE_HEADER.unpack_from
            by_off: dict[int, list[int]] = {}
            for type_id in range(1, len(self._offsets)):
                name_off = unpack(data, self._offsets[type_id])[0]
                if name_off:
                    ids = by_off.get(name_off)
                    if ids is None:
                        by_off[name_off] = [type_id]
                    else:
                        ids.append(type_id)
            self._by_name = {self._string(name_off): ids for name_off, ids in by_off.items()}
        return self._by_name

    def find(self, name: str, kinds: frozenset[int] | set[int]) -> int:
        """Id of the type called ``name`` of one of ``kinds`` (the first with members if several); HostError if none."""
        candidates = [t for t in self._name_index().get(name, ()) if self._record(t)[1] in kinds]
        if not candidates:
            raise HostError(f"{self.source}: no type {name!r} of kind {sorted(kinds)} in BTF")
        return candidates[0]

    def _struct_id(self, name: str) -> int:
        return self.find(name, _COMPOSITES)

    # -- type arithmetic ---------------------------------------------------------------------------------------

    def resolve(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
        seen = 0
        while type_id:
            _off, kind, _vlen, _kf, _name, ref = self._record(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = ref
            seen += 1
            if seen > 64:
                raise HostError(f"{self.source}: BTF modifier chain too long at type {type_id}")
        return 0

    def type_size(self, type_id: int) -> int:
        """Size in bytes of a type (void has size 0)."""
        type_id = self.resolve(type_id)
        if type_id == 0:
            return 0
        off, kind, _vlen, _kf, _name, size = self._record(type_id)
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_DATASEC):
            return size
        if kind == KIND_PTR:
            return _POINTER_SIZE
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, off + 12)
            return int(nelems) * self.type_size(elem)
        raise HostError(f"{self.source}: BTF type {type_id} ({self.type_name(type_id)!r}, kind {kind}) has no size")

    def _members(self, type_id: int) -> list[tuple[str, _Member]]:
        """Members of a struct/union in declaration order: (name, member) with bit offsets from its start."""
        off, kind, vlen, kind_flag, _name, _size = self._record(type_id)
        if kind not in _COMPOSITES:
            raise HostError(f"{self.source}: BTF type {type_id} is not a struct or union")
        out: list[tuple[str, _Member]] = []
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, off + 12 + 12 * i)
            if kind_flag:
                bit_offset, bitfield_size = moff & 0xFFFFFF, moff >> 24
            else:
                bit_offset, bitfield_size = moff, 0
                # Without kind_flag a bitfield is described by its INT type's encoding (offset and bit width).
                base = self.resolve(mtype)
                if base and self._record(base)[1] == KIND_INT:
                    boff = self._record(base)[0]
                    (enc,) = struct.unpack_from("<I", self._data, boff + 12)
                    bits, int_off = enc & 0xFF, (enc >> 16) & 0xFF
                    if int_off or bits != 8 * self._record(base)[5]:
                        bit_offset += int_off
                        bitfield_size = bits
            out.append((self._string(name_off) if name_off else "", _Member(bit_offset, bitfield_size, mtype)))
        return out

    def _find_member(self, type_id: int, name: str) -> _Member | None:
        """The member called ``name``, looking inside anonymous struct/union members (depth first, in order)."""
        for mname, member in self._members(type_id):
            if mname == name:
                return member
            if not mname:
                inner = self.resolve(member.type_id)
                if inner and self._record(inner)[1] in _COMPOSITES:
                    found = self._find_member(inner, name)
                    if found is not None:
                        return _Member(member.bit_offset + found.bit_offset, found.bitfield_size, found.type_id)
        return None

    def _walk(self, struct_name: str, path: str) -> _Member:
        """Bit offset, bitfield width and type of ``path`` ('a.b', 'a[1]', 'a.b[2][0]') in struct ``struct_name``."""
        type_id = self._struct_id(struct_name)
        bit_offset = 0
        current = _Member(0, 0, type_id)
        walked: list[str] = []
        for part in path.split("."):
            m = _PATH_PART.match(part)
            if m is None:
                raise HostError(f"bad member path {path!r} for struct {struct_name}")
            name, subscripts = m.group(1), m.group(2)
            container = self.resolve(current.type_id)
            if not container or self._record(container)[1] not in _COMPOSITES:
                raise HostError(f"struct {struct_name}: {'.'.join(walked)} is not a struct or union")
            found = self._find_member(container, name)
            if found is None:
                where = f"{struct_name}.{'.'.join(walked)}" if walked else struct_name
                raise HostError(f"struct {where} has no member {name!r} in {self.source}")
            bit_offset += found.bit_offset
            current = found
            walked.append(name)
            for index in (int(i) for i in re.findall(r"\[(\d+)\]", subscripts)):
                arr = self.resolve(current.type_id)
                if not arr or self._record(arr)[1] != KIND_ARRAY:
                    raise HostError(f"struct {struct_name}: {'.'.join(walked)} is not an array")
                elem, _index_type, nelems = struct.unpack_from("<III", self._data, self._record(arr)[0] + 12)
                if index >= nelems:
                    raise HostError(f"struct {struct_name}: index {index} out of {'.'.join(walked)}[{nelems}]")
                bit_offset += 8 * index * self.type_size(elem)
                current = _Member(0, 0, elem)
        return _Member(bit_offset, current.bitfield_size, current.type_id)

    # -- public queries ----------------------------------------------------------------------------------------

    def struct_size(self, name: str) -> int:
        """sizeof(struct name) (or union name)."""
        return self.type_size(self._struct_id(name))

    def member_offset(self, struct_name: str, path: str) -> int:
        """offsetof(struct struct_name, path) in bytes; members of anonymous unions/structs are found directly.

        ``path`` is dotted for nested named members and may index arrays ("_mm_id_mapcount[1]"). HostError names
        the struct and member when absent, and refuses a bitfield that does not start on a byte.
        """
        member = self._walk(struct_name, path)
        if member.bit_offset % 8:
            raise HostError(f"struct {struct_name}.{path} is a bitfield at bit {member.bit_offset}: use member_bits()")
        return member.bit_offset // 8

    def member_bits(self, struct_name: str, path: str) -> tuple[int, int]:
        """(bit offset, bit width) of a member; the width is the bitfield's, or 8 * its size for ordinary members."""
        member = self._walk(struct_name, path)
        width = member.bitfield_size or 8 * self.type_size(member.type_id)
        return member.bit_offset, width

    def member_size(self, struct_name: str, path: str) -> int:
        """sizeof the member (typedefs and qualifiers resolved); HostError for a bitfield."""
        member = self._walk(struct_name, path)
        if member.bitfield_size:
            raise HostError(f"struct {struct_name}.{path} is a {member.bitfield_size}-bit bitfield: use member_bits()")
        return self.type_size(member.type_id)

    def type_spelling(self, type_id: int) -> str:
        """A C-like spelling of a type ('struct page *', 'unsigned int', 'gfp_t'), for checks and messages."""
        if type_id == 0:
            return "void"
        _off, kind, _vlen, _kf, name_off, ref = self._record(type_id)
        name = self._string(name_off) if name_off else ""
        if kind == KIND_PTR:
            return self.type_spelling(ref) + " *"
        if kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            tag = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(kind, "enum")
            return f"{tag} {name}" if name else f"{tag} <anon>"
        if kind in (KIND_CONST, KIND_VOLATILE, KIND_RESTRICT):
            qual = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}[kind]
            return f"{qual} {self.type_spelling(ref)}"
        return name or f"<kind {kind}>"

    def tracepoint_args(self, tracepoint: str) -> list[str]:
        """Argument types of a tracepoint as a raw tracepoint program sees them (ctx->args[0], [1], ...).

        Read from the ``btf_trace_<name>`` typedef the kernel emits for every tracepoint
        (include/trace/bpf_probe.h); its first parameter, the probe's data pointer, is not an argument.
        """
        typedef = self.find(f"btf_trace_{tracepoint}", {KIND_TYPEDEF})
        ptr = self._record(typedef)[5]
        proto = self._record(ptr)[5] if self._record(ptr)[1] == KIND_PTR else 0
        if not proto or self._record(proto)[1] != KIND_FUNC_PROTO:
            raise HostError(f"{self.source}: btf_trace_{tracepoint} is not a pointer to a function prototype")
        off, _kind, vlen, _kf, _name, _ret = self._record(proto)
        params = [struct.unpack_from("<II", self._data, off + 12 + 8 * i)[1] for i in range(vlen)]
        return [self.type_spelling(t) for t in params[1:]]

    def _enum_items(self, enum_name: str) -> list[tuple[str, int]]:
        """(enumerator, value) pairs of ``enum enum_name`` (ENUM or ENUM64; signedness from kind_flag), in order."""
        type_id = self.find(enum_name, {KIND_ENUM, KIND_ENUM64})
        off, kind, vlen, signed, _name, _size = self._record(type_id)
        items: list[tuple[str, int]] = []
        for i in range(vlen):
            if kind == KIND_ENUM:
                name_off, value = struct.unpack_from("<Ii" if signed else "<II", self._data, off + 12 + 8 * i)
            else:
                name_off, lo, hi = struct.unpack_from("<III", self._data, off + 12 + 12 * i)
                value = (hi << 32) | lo
                if signed and value >= 1 << 63:
                    value -= 1 << 64
            items.append((self._string(name_off), int(value)))
        return items

    def enum_value(self, enum_name: str, enumerator: str) -> int:
        """The value of ``enumerator`` in ``enum enum_name``; HostError naming both when absent.

        Aliases are ordinary enumerators in BTF: on 6.18 ``PG_anon_exclusive`` is 11, the same value as
        ``PG_owner_2`` and ``PG_mappedtodisk`` (include/linux/page-flags.h enum pageflags).
        """
        for name, value in self._enum_items(enum_name):
            if name == enumerator:
                return value
        raise HostError(f"enum {enum_name} has no enumerator {enumerator!r} in {self.source}")

    def enumerators(self, enum_name: str) -> dict[str, int]:
        """All enumerators of ``enum enum_name`` with their values (aliases included, in declaration order)."""
        return dict(self._enum_items(enum_name))
