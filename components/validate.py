"""`validate`: prove the prepared dataset is fit to train on before any model sees it.

A per-sample table (split, id, label, shape, pixel min/max/mean, NaN/inf counts, content hash)
is checked split by split with a Great Expectations suite run through one Checkpoint per split.
Checks that span splits or read the manifest (class shares and counts, train/test leakage,
rejected source items, manifest counts) and drift against an accepted reference profile are
explicit checks that word each finding, and are also run as GX expectations over derived tables
(`prepared/class_counts`, `prepared/leakage`, `prepared/rejected_items`, `prepared/drift`), so
every check shows in the Data Docs, which render offline. Outputs: `report_dir/`
(`data_docs/`, `result.json`, `profile.json`, and `gate.json` when every check passed) and a
small metrics JSON; any failure raises `DataValidationError` after the reports are written.

`gate.json` is what training stages depend on: it says only which data passed (the data hash),
so accepting a new drift reference, which changes the drift scores in the metrics, leaves its
bytes and hence every trained model untouched. The suite, the checks and drift live in
`components.validation`; this module runs them and owns the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import Params, ValidateConfig
from components.core.data import SPLITS, Dataset, load_prepared
from components.core.io import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    hash_array,
    read_json,
)
from components.core.stage import StageIO, StageResult
from components.validation import (
    check_dataset,
    check_drift,
    derive_assets,
    link_checks,
    profile_dataset,
    run_expectations,
)

GATE_FILE = "gate.json"  # in the report folder; written only when every check passed

__all__ = [  # the last four live in `components.validation`; kept importable from here
    "GATE_FILE", "DataValidationError", "ValidationReport", "accept_profile", "describe_samples",
    "gate_record", "validate",
    "check_dataset", "check_drift", "profile_dataset", "run_expectations",
]


class DataValidationError(Exception):
    """The prepared dataset failed validation; the message lists every failed check."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ValidationReport:
    success: bool
    evaluated_expectations: int
    failed_expectations: int
    samples: dict[str, int]
    drift: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    report_dir: Path | None = None

    def metrics(self) -> dict[str, Any]:
        return {"success": self.success, "evaluated_expectations": self.evaluated_expectations,
                "failed_expectations": self.failed_expectations, "samples": self.samples,
                "drift": self.drift}


def validate(cfg: ValidateConfig, prepared_dir: Path, report_dir: Path,
             metrics_path: Path) -> ValidationReport:
    """Validate `prepared_dir`; write the reports and metrics; raise if any check failed."""
    ds = load_prepared(prepared_dir)
    names = [str(c) for c in ds.manifest.get("classes", [])]
    expected = list(cfg.expected_labels or range(ds.num_classes))
    tables = {s: describe_samples(ds, s) for s in SPLITS}
    profile = profile_dataset(tables, ds.split("train").x, names, cfg)
    ref_path = Path(cfg.reference_profile)
    with atomic_dir(report_dir) as tmp:
        checks = check_dataset(tables, ds.manifest, expected, names, cfg)
        drift, drift_records = check_drift(profile, ds.split("train").x, ref_path, cfg)
        derived = derive_assets(tables, ds.manifest, expected, names, cfg, drift)
        gx_records = run_expectations(tables, ds.manifest, expected, names, cfg,
                                      tmp / "data_docs", derived)
        per_sample = [r for r in gx_records if "for_check" not in r]
        records = per_sample + link_checks(checks + drift_records,
                                           [r for r in gx_records if "for_check" in r])
        failures = [r["message"] for r in records if not r["success"]]
        report = ValidationReport(
            success=not failures, evaluated_expectations=len(records),
            failed_expectations=len(failures), samples={s: len(tables[s]) for s in SPLITS},
            drift=drift, failures=failures, report_dir=Path(report_dir))
        atomic_write_json(tmp / "profile.json", profile)
        atomic_write_json(tmp / "result.json", {
            **report.metrics(), "failures": failures, "expectations": records,
            "config": cfg.model_dump(), "data_hash": ds.manifest.get("data_hash"),
            "data_docs": "data_docs/index.html"})
        if not failures:
            atomic_write_json(tmp / GATE_FILE, gate_record(ds.manifest))
    atomic_write_json(metrics_path, report.metrics())
    if failures:
        lines = [f"  {i}. {m}" for i, m in enumerate(failures, 1)]
        raise DataValidationError(
            f"{prepared_dir}: data validation failed ({len(failures)} of {len(records)} checks; "
            f"report: {Path(report_dir) / 'result.json'}):\n" + "\n".join(lines), report)
    return report


def gate_record(manifest: dict) -> dict[str, Any]:
    """The gate's content: which prepared data passed; nothing that drift or timing changes."""
    return {"passed": True, "data_hash": manifest.get("data_hash"),
            "splits": {s: manifest.get("splits", {}).get(s, {}).get("sha256") for s in SPLITS}}


def accept_profile(report_dir: Path, reference_path: Path) -> Path:
    """Make the profile of a validated dataset the reference that later runs are compared to."""
    profile = read_json(Path(report_dir) / "profile.json")
    if "class_share" not in profile or "intensity_histogram" not in profile:
        raise ValueError(f"{report_dir}/profile.json: not a dataset profile")
    return atomic_write_bytes(reference_path, (Path(report_dir) / "profile.json").read_bytes())


def describe_samples(ds: Dataset, split: str, chunk: int = 4096) -> pd.DataFrame:
    """One row per sample: split, id, label, shape "CxHxW", min, max, mean, nan/inf counts, hash.

    min/max/mean ignore non-finite pixels (those are counted apart) and are NaN for an image
    with no finite pixel. Vectorised over chunks of images to bound memory on large datasets.
    """
    s = ds.split(split)
    n = len(s.x)
    if not len(s.y) == len(s.ids) == n:
        raise DataValidationError(f"{split}: x, y and ids differ in length "
                                  f"({n}, {len(s.y)}, {len(s.ids)})")
    flat = s.x.reshape(n, int(np.prod(s.x.shape[1:])))  # (N, C*H*W)
    stats = {k: np.full(n, np.nan) for k in ("min", "max", "mean")}
    nans, infs = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for a in range(0, n, chunk):
        block = flat[a:a + chunk]
        finite = np.isfinite(block)
        n_finite = finite.sum(1)
        nans[a:a + chunk] = np.isnan(block).sum(1)
        infs[a:a + chunk] = block.shape[1] - n_finite - nans[a:a + chunk]
        with np.errstate(invalid="ignore", divide="ignore"):
            some = n_finite > 0
            lo = np.where(finite, block, np.inf).min(1)
            hi = np.where(finite, block, -np.inf).max(1)
            mean = np.where(finite, block, 0).sum(1, dtype=np.float64) / n_finite
        stats["min"][a:a + chunk] = np.where(some, lo, np.nan)
        stats["max"][a:a + chunk] = np.where(some, hi, np.nan)
        stats["mean"][a:a + chunk] = np.where(some, mean, np.nan)
    return pd.DataFrame({
        "split": split, "id": s.ids.astype(str), "label": s.y.astype(np.int64),
        "shape": "x".join(str(d) for d in s.x.shape[1:]), **stats,
        "nan_count": nans, "inf_count": infs, "hash": [hash_array(img) for img in s.x]})


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `validate` stage: the GX suite and dataset checks over `prepared`; fails loudly."""
    validate(cfg.validate_, io.dep("prepared"), io.out("validate_report"), io.metrics)
    return StageResult(metrics=read_json(io.metrics), params=cfg.validate_.model_dump(),
                       artifacts=[io.out("validate_report")])
