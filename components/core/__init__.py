"""Shared core of every stage: atomic file I/O, prepared datasets, the stage contract."""
