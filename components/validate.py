"""`validate`: prove the prepared dataset is fit to train on before any model sees it.

A per-sample table (split, id, label, shape, pixel min/max/mean, NaN/inf counts, content hash)
is checked split by split with a Great Expectations suite run through one Checkpoint per split,
which also renders Data Docs. Checks that span splits or read the manifest (class shares,
train/test leakage, rejected source items, manifest counts) and drift against an accepted
reference profile are explicit checks recorded in the same format. Outputs: `report_dir/`
(`data_docs/`, `result.json`, `profile.json`) and a small metrics JSON; any failure raises
`DataValidationError` after the reports are written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import ValidateConfig
from components.data import SPLITS, Dataset, load_prepared
from components.io import atomic_dir, atomic_write_bytes, atomic_write_json, hash_array, read_json

HIST_BINS = 20
SHOWN = 5  # ids / classes named in one failure message before "(+N more)"
Record = dict[str, Any]  # one evaluated expectation or check, as written to result.json


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
        records = run_expectations(tables, ds.manifest, expected, names, cfg, tmp / "data_docs")
        records += check_dataset(tables, ds.manifest, expected, names, cfg)
        drift, drift_records = check_drift(profile, ds.split("train").x, ref_path, cfg)
        records += drift_records
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
    atomic_write_json(metrics_path, report.metrics())
    if failures:
        lines = [f"  {i}. {m}" for i, m in enumerate(failures, 1)]
        raise DataValidationError(
            f"{prepared_dir}: data validation failed ({len(failures)} of {len(records)} checks; "
            f"report: {Path(report_dir) / 'result.json'}):\n" + "\n".join(lines), report)
    return report


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


# --- Great Expectations: one suite, one Checkpoint per split --------------------------------


def run_expectations(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                     names: list[str], cfg: ValidateConfig, docs_dir: Path) -> list[Record]:
    """Run the per-sample suite on each split's table; write Data Docs to `docs_dir`."""
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            data_docs_sites={"local_site": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}}))
        suite = context.suites.add(_build_suite(gx, manifest, expected, cfg))
        source = context.data_sources.add_pandas("prepared")
        records: list[Record] = []
        for split, table in tables.items():
            batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe(split)
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"validate_{split}", data=batch, suite=suite))
            checkpoint = context.checkpoints.add(gx.Checkpoint(
                name=f"validate_{split}", validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": SHOWN,
                               "unexpected_index_column_names": ["id"]}))
            count = manifest.get("splits", {}).get(split, {}).get("count", -1)
            result = checkpoint.run(batch_parameters={"dataframe": table},
                                    expectation_parameters={"manifest_count": count},
                                    run_id=RunIdentifier(run_name="distillery-validate"))
            for run in result.run_results.values():
                for r in run.results:
                    records.append(_gx_record(split, r, names))
    return records


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


# --- explicit checks across splits and on the manifest ---------------------------------------


def check_dataset(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                  names: list[str], cfg: ValidateConfig) -> list[Record]:
    """Class shares, leakage between splits, rejected source items, manifest consistency."""
    records = []
    rejected = manifest.get("rejected", [])
    records.append(_check("no_rejected_source_items", None, not rejected, {"rejected": rejected},
                          f"the source has {len(rejected)} rejected (corrupt or unreadable) "
                          "item(s): " + _cap([f"{r.get('id')} ({r.get('reason')})"
                                              for r in rejected], len(rejected))))
    for split, t in tables.items():
        counts = t["label"].value_counts()
        shares = {int(k): v / max(len(t), 1) for k, v in counts.items()}
        low = sorted(k for k in expected if 0 < shares.get(k, 0) < cfg.min_class_share)
        records.append(_check(
            "class_share_at_least_min", split, not low,
            {"min_class_share": cfg.min_class_share, "shares": shares},
            f"{split}: class share below min_class_share={cfg.min_class_share:g}: "
            + _cap([f"{_classes([k], names)} {shares[k]:.1%}" for k in low], len(low))))
        listed = manifest.get("splits", {}).get(split, {}).get("per_class", {})
        actual = {_name(int(k), names): int(v) for k, v in counts.items()}
        wrong = sorted(c for c in set(listed) | set(actual) if listed.get(c, 0) != actual.get(c, 0))
        records.append(_check(
            "manifest_per_class_counts_match", split, not wrong,
            {"manifest": listed, "arrays": actual},
            f"{split}: manifest per-class counts differ from the arrays for class(es) "
            + _cap([f"{c} (manifest {listed.get(c, 0)}, arrays {actual.get(c, 0)})"
                    for c in wrong], len(wrong))))
    for other in ("test", "val"):
        records.append(_check_leakage(tables["train"], tables[other], other))
    return records


def _check_leakage(train: pd.DataFrame, other: pd.DataFrame, split: str) -> Record:
    """Same image (content hash) or same source id in train and in `split`."""
    train_by_hash = dict(zip(train["hash"].tolist()[::-1], train["id"].tolist()[::-1],
                             strict=True))  # reversed: the first train id wins
    train_ids = set(train["id"].tolist())
    pairs = [(i, train_by_hash.get(h, i))
             for i, h in zip(other["id"].tolist(), other["hash"].tolist(), strict=True)
             if h in train_by_hash or i in train_ids]
    return _check(f"no_train_{split}_leakage", split, not pairs,
                  {"leaked": len(pairs), "pairs": pairs[:100]},
                  f"train/{split} leakage: {len(pairs)} {split} sample(s) also in train: "
                  + _cap([f"{split} {i} = train {t}" for i, t in pairs], len(pairs)))


# --- drift against an accepted reference profile ---------------------------------------------


def profile_dataset(tables: dict[str, pd.DataFrame], train_x: np.ndarray, names: list[str],
                    cfg: ValidateConfig) -> dict[str, Any]:
    """What drift is measured on: per-split class shares and the training pixel histogram."""
    shares = {}
    for split, t in tables.items():
        counts = t["label"].value_counts()
        shares[split] = {_name(int(k), names): v / max(len(t), 1) for k, v in counts.items()}
    lo, hi = cfg.value_min, cfg.value_max
    return {"version": 1, "classes": names, "samples": {s: len(t) for s, t in tables.items()},
            "class_share": shares,
            "intensity_histogram": {"split": "train", "bins": HIST_BINS, "range": [lo, hi],
                                    "p": _histogram(train_x, HIST_BINS, lo, hi).tolist()}}


def check_drift(profile: dict, train_x: np.ndarray, ref_path: Path,
                cfg: ValidateConfig) -> tuple[dict[str, Any], list[Record]]:
    """Class-share (L1/2) and intensity-histogram (total variation) distance to the reference."""
    if not ref_path.exists():
        return {"status": f"skipped: no reference profile at {ref_path}"}, []
    ref = read_json(ref_path)
    if "train" not in ref.get("class_share", {}) or "intensity_histogram" not in ref:
        raise ValueError(f"{ref_path}: not a dataset profile (write one with accept_profile)")
    ref_share, cur_share = ref["class_share"]["train"], profile["class_share"]["train"]
    share_tv = 0.5 * sum(abs(ref_share.get(c, 0) - cur_share.get(c, 0))
                         for c in set(ref_share) | set(cur_share))
    h, cur = ref["intensity_histogram"], profile["intensity_histogram"]
    same_bins = (h["bins"], list(h["range"])) == (cur["bins"], cur["range"])
    # compare on the reference's bins, so the two histograms line up
    p = np.asarray(cur["p"]) if same_bins else _histogram(train_x, h["bins"], *h["range"])
    hist_tv = 0.5 * float(np.abs(p - np.asarray(h["p"])).sum())
    scores = {"class_share": round(float(share_tv), 6), "intensity": round(hist_tv, 6)}
    records = [_check(f"{kind}_drift_at_most_max", "train", score <= cfg.max_drift,
                      {"score": score, "max_drift": cfg.max_drift, "reference": str(ref_path)},
                      f"train: {kind.replace('_', '-')} drift {score:.3f} exceeds "
                      f"max_drift={cfg.max_drift:g} (reference {ref_path})")
               for kind, score in scores.items()]
    return {"status": "checked", "reference": str(ref_path), "max_drift": cfg.max_drift,
            **scores}, records


def _histogram(x: np.ndarray, bins: int, lo: float, hi: float,
               chunk: int = 1 << 22) -> np.ndarray:
    """Share of finite pixels per bin over [lo, hi]; values outside land in the end bins."""
    flat = x.reshape(-1)
    counts = np.zeros(bins, np.int64)
    for a in range(0, flat.size, chunk):
        v = flat[a:a + chunk]
        if not np.isfinite(v).all():
            v = v[np.isfinite(v)]
        idx = ((v - np.float32(lo)) * np.float32(bins / (hi - lo))).astype(np.int64)
        counts += np.bincount(np.clip(idx, 0, bins - 1), minlength=bins)
    return counts / max(int(counts.sum()), 1)


# --- record and message helpers --------------------------------------------------------------


def _check(name: str, split: str | None, ok: bool, observed: dict, problem: str) -> Record:
    rec = {"check": name, "engine": "distillery", "split": split, "success": bool(ok),
           "result": observed}
    if not ok:
        rec["message"] = problem
    return rec


def _name(label: int, names: list[str]) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _classes(labels: list, names: list[str]) -> str:
    return ", ".join(f"{k} ({_name(int(k), names)})" if _name(int(k), names) != str(k)
                     else str(k) for k in labels)


def _cap(items: list[str], total: int) -> str:
    shown = items[:SHOWN]
    return ", ".join(shown) + (f" (+{total - len(shown)} more)" if total > len(shown) else "")
