"""Data-source loaders for the `ingest` stage, selected by name from `SOURCES`.

Each loader reads one kind of labelled image source and returns `RawData`: the source's raw
pixel values as (N, C, H, W), labels 0..K-1, one id per sample saying where it came from, the
class names, the source's default `max_value`, items that could not be read (`rejected`), and a
hash of the source files. Loaders neither scale nor clean values: NaN and inf pass through so
that the `validate` stage sees them.

One module per source kind, named as its `ingest.source` value, with `load(cfg)`. A new kind
is one new module here: `SOURCES` and `IngestConfig.source`'s choices both come from the module
names (`components.config.plugin_names`), so they cannot disagree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from components.config import IngestConfig, plugin_names
from components.sources.common import RawData
from components.sources.idx import read_idx

__all__ = ["SOURCES", "Loader", "RawData", "load_source", "read_idx"]

Loader = Callable[[IngestConfig], RawData]

SOURCES: dict[str, Loader] = {
    name: importlib.import_module(f"{__name__}.{name}").load for name in plugin_names("sources")
}


def load_source(cfg: IngestConfig) -> RawData:
    """Load the source `cfg.source` names, via the `SOURCES` registry."""
    try:
        loader = SOURCES[cfg.source]
    except KeyError:
        raise ValueError(f"unknown source `{cfg.source}` (known: {sorted(SOURCES)})") from None
    return loader(cfg)
