"""Data: formats, tokenising and batching of every format, intake, catalog and bundled sets.

Layer 2: imports only the core modules and governance (never registry, models, eval).
"""
