"""Great Expectations: the per-sample suite per split and the dataset-level suites.

Each table is validated through its own Checkpoint; Data Docs are rendered for all of them.
Each evaluated expectation comes back as a `Record`; `meta.problem` on a per-sample expectation
words its failure in the error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import ValidateConfig
from components.validation.data_docs import make_offline
from components.validation.gx_dataset import DerivedAsset
from components.validation.records import SHOWN, Record, _cap, _classes


def run_expectations(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                     names: list[str], cfg: ValidateConfig, docs_dir: Path,
                     derived: Sequence[DerivedAsset] = ()) -> list[Record]:
    """Run the per-sample suite on each split and the dataset-level suites on `derived`.

    Each table is data asset `prepared/<name>`, validated through its own Checkpoint. Data Docs
    for all of them are written to `docs_dir` and made to render offline. The records of
    `derived` carry `for_check` (the `check_dataset`/`check_drift` check they express) and are
    for `link_checks`; the others are the per-sample suite's records.
    """
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        docs_dir = Path(docs_dir).resolve()
        context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            data_docs_sites={"local_site": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}}))
        source = context.data_sources.add_pandas("prepared")
        suite = context.suites.add(_build_suite(gx, manifest, expected, cfg))
        records: list[Record] = []
        for split, table in tables.items():
            count = manifest.get("splits", {}).get(split, {}).get("count", -1)
            for r in _run_checkpoint(gx, context, source, split, table, suite, ["id"],
                                     {"manifest_count": count}):
                records.append(_gx_record(split, r, names))
        for asset in derived:
            suite = context.suites.add(_build_derived_suite(gx, asset))
            for r in _run_checkpoint(gx, context, source, asset.name, asset.table, suite,
                                     asset.index_columns, {}):
                config = r.expectation_config
                records.append({
                    "check": config.type, "engine": "great_expectations",
                    "asset": f"prepared/{asset.name}", "for_check": config.meta["check"],
                    "split": config.meta["split"], "success": bool(r.success),
                    "result": r.to_json_dict()["result"]})
        context.build_data_docs()
    make_offline(docs_dir)
    return records


def _run_checkpoint(gx: Any, context: Any, source: Any, name: str, table: pd.DataFrame,
                    suite: Any, index_columns: list[str], parameters: dict) -> list[Any]:
    """Validate `table` as asset `prepared/<name>`; store the result under that asset name.

    GX 1.x leaves a dataframe asset's name out of the result's batch spec, where Data Docs
    look for it ("Data asset: None"), so it is set there before the result is stored.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate_{name}", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"validate_{name}", validation_definitions=[definition], actions=[],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": SHOWN,
                       "unexpected_index_column_names": index_columns}))
    result = checkpoint.run(batch_parameters={"dataframe": table},
                            expectation_parameters=parameters,
                            run_id=RunIdentifier(run_name="distillery-validate"))
    evaluated = []
    for key, run in result.run_results.items():
        run.meta["batch_spec"] = {**run.meta.get("batch_spec", {}),
                                  "data_asset_name": f"prepared/{name}"}
        context.validation_results_store.set(key, run)
        evaluated += run.results
    return evaluated


def _build_derived_suite(gx: Any, asset: DerivedAsset) -> Any:
    """The expectations on one derived table; `meta` names the check each one expresses."""
    suite = gx.ExpectationSuite(name=f"dataset_{asset.name}")
    for spec in asset.expectations:
        kwargs = dict(spec.kwargs)
        if "row_condition" in kwargs:
            kwargs["condition_parser"] = "pandas"
        expectation = getattr(gx.expectations, spec.kind)(**kwargs)
        expectation.meta = {"check": spec.check, "split": spec.split}
        suite.add_expectation(expectation)
    return suite


def _build_suite(gx: Any, manifest: dict, expected: list[int], cfg: ValidateConfig) -> Any:
    """The per-sample expectations; `meta.problem` words a failure in the error message."""
    e = gx.expectations
    shape = "x".join(str(d) for d in manifest.get("shape", []))
    spec = [
        (e.ExpectTableRowCountToEqual(value={"$PARAMETER": "manifest_count"}), ""),
        (e.ExpectColumnValuesToBeInSet(column="label", value_set=expected),
         f"have a label outside the expected set {expected}"),
        (e.ExpectColumnDistinctValuesToContainSet(column="label", value_set=expected), ""),
        (e.ExpectColumnValuesToBeInSet(column="shape", value_set=[shape]),
         f"have a shape other than the manifest's {shape}"),
        (e.ExpectColumnValuesToBeBetween(column="min", min_value=cfg.value_min),
         f"have pixel values below value_min={cfg.value_min:g}"),
        (e.ExpectColumnValuesToBeBetween(column="max", max_value=cfg.value_max),
         f"have pixel values above value_max={cfg.value_max:g}"),
        (e.ExpectColumnValuesToBeBetween(column="nan_count", min_value=0, max_value=0),
         "contain NaN pixels"),
        (e.ExpectColumnValuesToBeBetween(column="inf_count", min_value=0, max_value=0),
         "contain infinite pixels"),
        (e.ExpectColumnValuesToNotBeNull(column="hash"), "have no content hash"),
        (e.ExpectColumnValuesToBeUnique(column="id"), "share a source id"),
    ]
    suite = gx.ExpectationSuite(name="prepared_samples")
    for expectation, problem in spec:
        expectation.meta = {"problem": problem}
        suite.add_expectation(expectation)
    return suite


def _gx_record(split: str, r: Any, names: list[str]) -> Record:
    config = r.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    rec = {"check": config.type, "engine": "great_expectations", "split": split,
           "success": bool(r.success), "kwargs": kwargs, "result": r.to_json_dict()["result"]}
    if r.success:
        return rec
    res = r.result or {}
    if r.exception_info and r.exception_info.get("raised_exception"):
        rec["message"] = f"{split}: {config.type} raised {r.exception_info['exception_message']}"
    elif config.type == "expect_table_row_count_to_equal":
        rec["message"] = (f"{split}: {res.get('observed_value')} samples in {split}.npz but the "
                          f"manifest says {kwargs.get('value')}")
    elif config.type == "expect_column_distinct_values_to_contain_set":
        missing = res.get("partial_missing_list", [])
        rec["message"] = f"{split}: class(es) missing from the split: {_classes(missing, names)}"
    else:
        column = kwargs["column"]
        ids = [f"{row['id']} ({column}={row[column]})"
               for row in res.get("partial_unexpected_index_list", [])]
        rec["message"] = (f"{split}: {res.get('unexpected_count')} sample(s) "
                          f"{config.meta.get('problem', 'failed ' + config.type)}: "
                          f"{_cap(ids, res.get('unexpected_count', len(ids)))}")
    return rec


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """No usage statistics and only GX errors on the console, for the duration of a run."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
