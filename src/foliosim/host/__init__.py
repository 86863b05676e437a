"""The running kernel as a source of facts (the I/O edge; needs root).

pagemap, kpagecount and kpageflags readers, the BPF folio reader with its BTF
offsets, tracefs page-fault events, THP/mTHP settings with save and restore,
and the capability probe. Nothing here imports the model: ``foliosim.live``
joins the two.
"""
