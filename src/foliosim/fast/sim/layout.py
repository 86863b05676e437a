"""Array layout of the compiled process simulator: column numbers, codes and rule numbers.

The folio table ``fs`` extends :mod:`foliosim.fast.kernels`' folio columns (``F_*``, which the shared rmap/owner
kernels read and write) with the simulator's own per-folio fields (``X_*``). Page tables are two-level as in the
kernel: a table slot per (MM, PMD index) holds the PMD entry and, when it has a page table, its PTEs.
"""

from __future__ import annotations

from foliosim.fast import kernels as K
from foliosim.vm.events import CowRule

# Folio columns after the rmap kernels' ones.
X_REF = K.F_COLS  # _refcount
X_PINCOUNT = X_REF + 1  # _pincount
X_KIND = X_REF + 2  # KIND_*
X_NAME = X_REF + 3  # the reference's folio name number (f<N>)
X_PINS = X_REF + 4  # FOLL_PIN pins held (SimFolio.pins)
X_REFS = X_REF + 5  # FOLL_GET references held (SimFolio.refs)
X_DEFER = X_REF + 6  # queued for deferred split
X_NEXT = X_REF + 7  # free-list link
X_PCFILE = X_REF + 8  # page cache: 1 + the file number (FC row) caching this folio, 0: not in the page cache
X_PCIDX = X_REF + 9  # page cache: the file index of the folio's page 0
FS_COLS = X_REF + 10

KIND_ANON, KIND_FILE, KIND_SHMEM = 0, 1, 2

#: page-table folio values besides folio slots
NONE, ZERO, HUGE_ZERO = -1, -2, -3

# Table slot columns.
TB_LIVE, TB_MM, TB_IDX, TB_PMDF, TB_PMDW, TB_HASPT, TB_NPTE, TB_NEXT = range(8)
TB_COLS = 8
# PTE flag bits
PW, PD = 1, 2
#: a PTE's flag byte with PW cleared, as a mask that fits the byte (``~PW`` does not when the kernels run as Python,
#: NUMBA_DISABLE_JIT=1: numpy refuses a negative operand for an unsigned byte)
PW_CLEAR = 0xFF ^ PW

# MM columns (row = the MM's name number).
MS_LIVE, MS_ID, MS_USERS, MS_COUNT, MS_PINNED, MS_ZAPPED, MS_VOFF, MS_NVMA, MS_NMAP = range(9)
MS_COLS = 9

# VMA columns.
V_START, V_END, V_READ, V_WRITE, V_SHARED, V_THP, V_ANONVMA, V_FILE, V_PGOFF, V_MAPSW = range(10)
# The rest of a Vma's fields, so that the rows can be the control plane's source of truth (foliosim.fast.sim.kvma):
# VM_EXEC, VM_NORESERVE, VM_ACCOUNT, VM_DONTFORK, soft-dirty armed, the label (interned). Vma.anon_vma_forked needs
# no column: it holds exactly when the anon_vma is older than the MM (FastMM.anon_birth), i.e. came with a fork.
V_EXEC, V_NORESERVE, V_ACCOUNT, V_DONTFORK, V_SDWP, V_LABEL = range(10, 16)
VM_COLS = 16  # V_MAPSW: Vma.maps_writable (vm_page_prot has the write bit); V_THP: the thp orders as a bit mask

# File table columns (row = the file number, V_FILE): where its page cache starts in the page-cache array (one
# int32 folio slot or -1 per file page), its pages, folio order, folio kind, unlinked shmem (Vma.file.anon), and
# the content id of its disk pages (the fast engine never writes a disk).
FC_BASE, FC_NR, FC_ORDER, FC_KIND, FC_ANON, FC_CONTENT = range(6)
FC_COLS = 6

# Global scalars.
(G_NFOLIO, G_NPAGE, G_NAME, G_ANONVMA, G_NTR, G_NCOW, G_FAULTS, G_REUSE, G_COPY, G_FREE_TB, G_NTB,
 G_HUSED, G_ERR, G_ERRF, G_PMDSPLIT, G_EARLY, G_SEQ, G_NGATHER, G_LIVE, G_RMAP) = range(20)
G_SEGV = 20  # accesses refused with SIGSEGV by the kernels' own protection check
G_FREE = 21  # free-list heads per order: G_FREE + order
G_MADV = G_FREE + 21  # MADV_COLD/PAGEOUT decisions: take, skip, split
G_FSPLIT = G_MADV + 3  # folio splits
G_SHMEM_WHOLE = G_FSPLIT + 1  # finish_fault() mapped a whole anonymous-shmem folio
G_ALLOC = G_SHMEM_WHOLE + 1  # folios allocated (alloc_folio()'s counters): G_ALLOC + kind * ALLOC_ORDERS + order
ALLOC_ORDERS = 13
G_LEN = G_ALLOC + 3 * ALLOC_ORDERS

# Options.
O_RECORD, O_MUTANT, O_USE_ZERO, O_ORACLE, O_FAULT_AROUND, O_HANDBACK = range(6)
O_LEN = 6  # O_FAULT_AROUND: fault_around_pages; O_HANDBACK: hand do_cow_fault() back (U_FILE_FAULT) to privatize
MUTANT_NONE = 0
MUTANT_NO_SHARED_TEST = 1  # reuse a large folio without the shared-bit test

# Trace columns.
T_KIND, T_MM, T_FOLIO, T_ORDER, T_LEVEL, T_PAGE, T_NR = range(7)
T_COLS = 7

# CoW decision columns.
(C_MM, C_VPN, C_FOLIO, C_PAGE, C_ORDER, C_LEVEL, C_RULE, C_OUTCOME, C_UNSHARE, C_MAPCOUNT, C_REFCOUNT,
 C_SHBIT, C_NEW) = range(13)
C_COLS = 13

#: rule numbers in the kernels, in this order
RULES: tuple[CowRule, ...] = (
    CowRule.ANON_EXCLUSIVE, CowRule.SMALL_REFCOUNT_ONE, CowRule.SMALL_EXTRA_REFS, CowRule.LARGE_MAPCOUNT_ONE,
    CowRule.LARGE_MAYBE_SHARED, CowRule.LARGE_EXTRA_REFS, CowRule.LARGE_EXCLUSIVE, CowRule.PMD_REFCOUNT_ONE,
    CowRule.PMD_SPLIT, CowRule.HUGE_ZERO, CowRule.ZERO_PAGE, CowRule.NOT_ANON, CowRule.SHARED_MAPPING,
)
(R_ANON_EXCL, R_SMALL_ONE, R_SMALL_EXTRA, R_LARGE_MC_ONE, R_LARGE_SHARED, R_LARGE_EXTRA, R_LARGE_EXCL,
 R_PMD_ONE, R_PMD_SPLIT, R_HUGE_ZERO, R_ZERO, R_NOT_ANON, R_SHARED_MAPPING) = range(13)
OUTCOMES = ("reuse", "copy", "split", "new-thp", "writable")
OC_REUSE, OC_COPY, OC_SPLIT, OC_NEW_THP, OC_WRITABLE = range(5)

# Kernel return codes.
RC_OK = 0
RC_ROOM = 1  # out of array room: grow and call again from ``done``
RC_UNSUPPORTED = 2  # a path the fast engine does not model (G_ERR says which)
RC_ERROR = 3  # the rmap core rejected a call (a simulator bug): G_ERR/G_ERRF say which

# Unsupported / error reasons (G_ERR).
U_FILE_FAULT = 1
U_BEYOND_EOF = 2
E_RMAP = 10
E_REFCOUNT = 11
E_FREE = 12
E_WRITE_RO = 13
E_ISOLATION = 14
REASONS = {U_FILE_FAULT: "a copy-on-write fault in a private file mapping",
           U_BEYOND_EOF: "a fault beyond the end of a file",
           E_RMAP: "the rmap core rejected a call", E_REFCOUNT: "a refcount went negative",
           E_FREE: "a folio freed with mappings left (bad page state)",
           E_WRITE_RO: "a store to a page that is not writable and AnonExclusive",
           E_ISOLATION: "isolation: a page does not read what its MM last wrote there"}
