"""`digits` source: scikit-learn's bundled set, loaded with its raw values."""

from __future__ import annotations

import numpy as np

from components.config import IngestConfig
from components.sources import load_source


def test_digits_loads_bundled_set_with_raw_values():
    raw = load_source(IngestConfig())
    assert raw.images.shape == (1797, 1, 8, 8)
    assert raw.labels.dtype == np.int64 and set(raw.labels) == set(range(10))
    assert raw.classes == [str(i) for i in range(10)]
    assert raw.max_value == 16 and raw.images.max() == 16  # unscaled
    assert raw.ids[17] == "digits:17" and raw.rejected == []
    assert len(raw.source_sha256) == 64
