"""The rmap trace: parsing, the per-operation state record, and replay."""
