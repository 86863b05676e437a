"""The stuck shared bit (Linux v6.15 MM owner tracking): P writes a region of 64 KiB folios and forks C1, C2, C3.

P's MM and C1's take the folio's two slots; C2 and C3 are untracked. The exits are chained: P exits, then C1,
then C2 (each waits for end of file on a pipe whose only writer was the one before: the kernel releases a task's
MM before its files, kernel/exit.c do_exit()), then C3. Once P and C1 are gone both slots are free and nothing
clears the shared bit, so after C2's exit C3 maps every folio alone while the kernel still answers "maybe mapped
shared": a false "shared" (a copy on C3's next write, where the exclusive folio could have been reused).

    sudo foliosim trace --thp 64K=always --census events -o stuck-bit.trace.gz -- python3 stuck-bit.py [FOLIOS]

Without 64K folios (hugepages-64kB/enabled never) the region gets small folios and there is nothing to see.
"""

import ctypes
import mmap
import os
import sys

FOLIO = 64 << 10
PAGE = 4096


def main() -> None:
    folios = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    region = mmap.mmap(-1, FOLIO * (folios + 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    start = -base % FOLIO  # the first 64 KiB-aligned byte: a fault there may get a whole aligned folio
    for offset in range(start, start + folios * FOLIO, PAGE):
        region[offset] = 1
    read_a, write_a = os.pipe()  # P -> C1
    read_b, write_b = os.pipe()  # C1 -> C2
    read_c, write_c = os.pipe()  # C2 -> C3
    for wait_for, keep in ((read_a, write_b), (read_b, write_c), (read_c, -1)):
        if os.fork() == 0:
            for fd in (write_a, write_b, write_c):
                if fd != keep:
                    os.close(fd)
            os.read(wait_for, 1)  # end of file: the one before has exited and its MM is gone
            os._exit(0)
    os.close(write_b)
    os.close(write_c)
    # P exits now; write_a closes with it, which lets C1 go


if __name__ == "__main__":
    main()
