"""The `SOURCES` registry: one loader per `ingest.source` choice, picked by `load_source`.

Each loader's behaviour is tested beside its module, in `tests/components/sources/`.
"""

from __future__ import annotations

from typing import get_args

import pytest

from components.config import IngestConfig
from components.sources import SOURCES, load_source


def test_registry_matches_config_source_names():
    assert set(SOURCES) == set(get_args(IngestConfig.model_fields["source"].annotation))


def test_every_source_module_registers_under_its_own_file_name():
    import components.sources.csv as csv_source

    assert SOURCES["csv"] is csv_source.load
    assert "common" not in SOURCES  # the shared helpers are no source


def test_a_new_source_is_one_file(tmp_path, monkeypatch):
    """Dropping a module into components/sources/ makes it a valid `ingest.source`."""
    from components.config import base

    (tmp_path / "sources").mkdir()
    for name in ("common", "digits", "parquet"):
        (tmp_path / "sources" / f"{name}.py").write_text("")
    monkeypatch.setattr(base, "COMPONENTS", tmp_path)
    assert base.plugin_names("sources") == ("digits", "parquet")


def test_load_source_dispatches_on_the_configured_name(monkeypatch):
    seen = []
    monkeypatch.setitem(SOURCES, "npz", lambda cfg: seen.append(cfg) or "raw")
    cfg = IngestConfig(source="npz", path="x.npz")
    assert load_source(cfg) == "raw" and seen == [cfg]


def test_load_source_rejects_an_unknown_name_listing_the_known_ones():
    cfg = IngestConfig.model_construct(source="parquet")  # past the config's own check
    with pytest.raises(ValueError, match=r"unknown source `parquet` \(known: \['csv', 'digits'"):
        load_source(cfg)
