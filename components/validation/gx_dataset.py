"""Dataset-level checks as Great Expectations: derived tables and the expectations on them.

`check_dataset` and `check_drift` word each finding; so that the same findings show in Data Docs
with their results, each check is also expressed as built-in GX expectations over a small derived
table (one row per split and class, per val/test sample, per rejected source item, per drift
score). `link_checks` ties each GX outcome back to the check it expresses: a check passes only if
its expectations pass too. Plain data only: the suite is built and run in `gx_suite`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from components.config import ValidateConfig
from components.validation.records import Record, _name

SCORED_SPLITS = ("val", "test")  # compared against train for leakage


@dataclass
class Expect:
    """One GX expectation (class name in `great_expectations.expectations`) for one check."""

    kind: str
    kwargs: dict[str, Any]
    check: str  # the `Record["check"]` it expresses
    split: str | None = None


@dataclass
class DerivedAsset:
    """A derived table, validated as data asset `prepared/<name>` by suite `dataset_<name>`."""

    name: str
    table: pd.DataFrame
    index_columns: list[str]  # what names an unexpected row in Data Docs and the record
    expectations: list[Expect] = field(default_factory=list)


def derive_assets(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                  names: list[str], cfg: ValidateConfig,
                  drift: dict[str, Any]) -> list[DerivedAsset]:
    """The derived tables and expectations that express `check_dataset` and `check_drift`."""
    assets = [_class_counts(tables, manifest, expected, names, cfg), _leakage(tables),
              _rejected(manifest)]
    if drift.get("status") == "checked":
        assets.append(_drift(drift, cfg))
    return assets


def link_checks(checks: list[Record], outcomes: list[Record]) -> list[Record]:
    """Attach each GX outcome to the check it expresses; a failed expectation fails the check."""
    by_check: dict[tuple, list[Record]] = {}
    for o in outcomes:
        by_check.setdefault((o["for_check"], o["split"]), []).append(o)
    for rec in checks:
        mine = by_check.pop((rec["check"], rec["split"]), [])
        rec["great_expectations"] = [{"expectation": o["check"], "asset": o["asset"],
                                      "success": o["success"]} for o in mine]
        bad = [o for o in mine if not o["success"]]
        if bad and rec["success"]:  # the two disagree: trust the failure, and name it
            rec["success"] = False
            rec["message"] = (f"{rec['split'] or 'dataset'}: {rec['check']} passed but its Great "
                              "Expectations check failed: " + ", ".join(
                                  f"{o['check']} on {o['asset']}" for o in bad))
    if by_check:
        raise ValueError(f"Great Expectations results for unknown checks: {sorted(by_check)}")
    return checks


def _class_counts(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                  names: list[str], cfg: ValidateConfig) -> DerivedAsset:
    """One row per split and class (declared, present or listed in the manifest)."""
    rows = []
    for split, t in tables.items():
        counts = {int(k): int(v) for k, v in t["label"].value_counts().items()}
        listed = manifest.get("splits", {}).get(split, {}).get("per_class", {})
        labels: dict[str, int] = {_name(k, names): k for k in sorted(set(expected) | set(counts))}
        for cls in listed:
            labels.setdefault(cls, -1)  # a class only the manifest names
        for cls, k in labels.items():
            n = counts.get(k, 0)
            rows.append({"split": split, "class": cls, "label": k, "declared": k in expected,
                         "samples": n, "share": n / max(len(t), 1),
                         "min_samples": getattr(cfg.min_per_class, split),
                         "manifest_samples": int(listed.get(cls, 0))})
    present = "samples > 0"
    spec = [
        Expect("ExpectColumnUniqueValueCountToBeBetween",
               {"column": "label", "min_value": 2, "row_condition": "declared == True"},
               "at_least_two_classes"),
        Expect("ExpectColumnUniqueValueCountToBeBetween",
               {"column": "label", "min_value": 2, "row_condition": present},
               "at_least_two_classes"),
        Expect("ExpectColumnValuesToBeInSet",
               {"column": "label", "value_set": expected, "row_condition": present},
               "labels_within_declared_classes"),
    ]
    for split in tables:
        declared = f'split == "{split}" and declared == True and {present}'
        spec += [
            Expect("ExpectColumnValuesToBeBetween",
                   {"column": "share", "min_value": cfg.min_class_share, "row_condition": declared},
                   "class_share_at_least_min", split),
            Expect("ExpectColumnValuesToBeBetween",
                   {"column": "samples", "min_value": getattr(cfg.min_per_class, split),
                    "row_condition": declared}, "class_count_at_least_min", split),
            Expect("ExpectColumnPairValuesToBeEqual",
                   {"column_A": "samples", "column_B": "manifest_samples",
                    "row_condition": f'split == "{split}"'},
                   "manifest_per_class_counts_match", split),
        ]
    columns = ["split", "class", "label", "declared", "samples", "share", "min_samples",
               "manifest_samples"]
    return DerivedAsset("class_counts", pd.DataFrame(rows, columns=columns), ["split", "class"],
                        spec)


def _leakage(tables: dict[str, pd.DataFrame]) -> DerivedAsset:
    """One row per val/test sample: the train sample with the same image or id, if any."""
    train = tables["train"]
    train_by_hash = dict(zip(train["hash"].tolist()[::-1], train["id"].tolist()[::-1],
                             strict=True))  # reversed: the first train id wins, as in checks
    train_ids = set(train["id"].tolist())
    rows = []
    for split in SCORED_SPLITS:
        for i, h in zip(tables[split]["id"].tolist(), tables[split]["hash"].tolist(), strict=True):
            match = train_by_hash.get(h, i if i in train_ids else None)
            rows.append({"split": split, "id": i, "hash": h,  # Data Docs show the pair
                         "same_as_train": None if match is None else f"{i} = train {match}"})
    spec = [Expect("ExpectColumnValuesToBeNull",
                   {"column": "same_as_train", "row_condition": f'split == "{split}"'},
                   f"no_train_{split}_leakage", split) for split in SCORED_SPLITS]
    table = pd.DataFrame(rows, columns=["split", "id", "hash", "same_as_train"])
    return DerivedAsset("leakage", table.astype({"same_as_train": object}), ["id"], spec)


def _rejected(manifest: dict) -> DerivedAsset:
    """One row per source item that ingest could not read (corrupt or unreadable files)."""
    rows = [{"id": str(r.get("id")), "reason": str(r.get("reason"))}
            for r in manifest.get("rejected", [])]
    return DerivedAsset("rejected_items", pd.DataFrame(rows, columns=["id", "reason"]), ["id"],
                        [Expect("ExpectTableRowCountToEqual", {"value": 0},
                                "no_rejected_source_items")])


def _drift(drift: dict[str, Any], cfg: ValidateConfig) -> DerivedAsset:
    """One row per drift score against the reference profile."""
    kinds = ("class_share", "intensity")
    table = pd.DataFrame([{"kind": k, "score": float(drift[k]), "max_drift": cfg.max_drift,
                           "reference": drift["reference"]} for k in kinds])
    spec = [Expect("ExpectColumnValuesToBeBetween",
                   {"column": "score", "min_value": 0, "max_value": cfg.max_drift,
                    "row_condition": f'kind == "{k}"'}, f"{k}_drift_at_most_max", "train")
            for k in kinds]
    return DerivedAsset("drift", table, ["kind"], spec)
