"""Errors of the host layer: a missing capability, or an operation on the kernel that failed."""

from __future__ import annotations


class HostUnavailable(Exception):
    """A capability the caller needs is missing here (not root, no BPF, no BTF, no tracefs, ...).

    The message names what is missing and, where it helps, how to get it.
    """


class HostError(Exception):
    """An operation on the running kernel failed: the message names the file or syscall and the errno."""


def os_error(what: str, exc: OSError) -> HostError:
    """A HostError for ``what`` (a path or a syscall) from an OSError, naming its errno."""
    import errno as _errno

    name = _errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return HostError(f"{what}: {name} ({exc.strerror})")
