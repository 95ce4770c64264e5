"""`IMPORTANCE`: the channel importance criteria of `components/pruning/criteria/`, by name."""

from __future__ import annotations

import importlib

from components.config import plugin_names
from components.pruning.criteria.common import Batches, Importance

__all__ = ["IMPORTANCE", "Batches", "Importance"]

IMPORTANCE: dict[str, Importance] = {
    name: importlib.import_module(f"components.pruning.criteria.{name}").score
    for name in plugin_names("pruning/criteria")
}
