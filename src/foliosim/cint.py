"""C integer behaviour: the one place where Python ints are made to wrap like C types.

The kernel stores mapcounts in ``atomic_t`` (int), per-MM mapcounts in ``int``
(64-bit) or ``short`` (32-bit), and the owner word in ``unsigned long``. Every
store into one of those fields goes through :meth:`CType.wrap`, so overflow
behaves as two's complement, as gcc compiles it for the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CType:
    """A fixed-width C integer type (two's complement when signed)."""

    name: str
    bits: int
    signed: bool

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def wrap(self, value: int) -> int:
        """Return ``value`` converted to this type, wrapping modulo 2**bits."""
        value &= (1 << self.bits) - 1
        if self.signed and value >> (self.bits - 1):
            value -= 1 << self.bits
        return value

    def fits(self, value: int) -> bool:
        return self.min <= value <= self.max


S16 = CType("short", 16, True)
S32 = CType("int", 32, True)
U16 = CType("unsigned short", 16, False)
U32 = CType("unsigned int", 32, False)
U64 = CType("unsigned long (64-bit)", 64, False)
U32_LONG = CType("unsigned long (32-bit)", 32, False)
