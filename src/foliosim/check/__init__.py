"""The exhaustive checker: bounded breadth-first exploration of rmap sequences,
CPU interleavings around the owner-tracking bit spinlock, and mutants.

Layer: above the trace/rmap layers, below cli/report; nothing here prints.
"""
