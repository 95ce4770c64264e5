"""Explicit checks that span splits or read the manifest, recorded like GX expectations.

Class shares and counts, train/val and train/test leakage, rejected source items, manifest
counts.
"""

from __future__ import annotations

import pandas as pd

from components.config import ValidateConfig
from components.validation.records import Record, _cap, _check, _classes, _name


def check_dataset(tables: dict[str, pd.DataFrame], manifest: dict, expected: list[int],
                  names: list[str], cfg: ValidateConfig) -> list[Record]:
    """Class shares and counts, leakage between splits, rejected items, manifest consistency."""
    records = []
    present = sorted({int(k) for t in tables.values() for k in t["label"].unique()})
    records.append(_check(
        "at_least_two_classes", None, len(expected) >= 2 and len(present) >= 2,
        {"declared": len(expected), "present": present},
        f"a classifier needs at least 2 classes: {len(expected)} declared "
        f"({_cap([_name(k, names) for k in expected], len(expected))}), "
        f"{len(present)} present in the splits (a model labelling everything "
        f"{_name(present[0], names) if present else '?'} would score 100%)"))
    undeclared = sorted(k for k in present if k not in expected)
    records.append(_check(
        "labels_within_declared_classes", None, not undeclared,
        {"undeclared": undeclared},
        f"label(s) outside the declared classes {expected}: {undeclared}"))
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
        records.append(_check_min_per_class(counts, split, expected, names, cfg))
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


def _check_min_per_class(counts: pd.Series, split: str, expected: list[int], names: list[str],
                         cfg: ValidateConfig) -> Record:
    """Each present class has at least `min_per_class.<split>` samples in `split`.

    A class absent from the split is the GX suite's finding (distinct values contain the set),
    not repeated here.
    """
    minimum = getattr(cfg.min_per_class, split)
    have = {int(k): int(v) for k, v in counts.items()}
    low = sorted(k for k in expected if 0 < have.get(k, 0) < minimum)
    return _check(
        "class_count_at_least_min", split, not low,
        {"min_per_class": minimum, "counts": {_name(k, names): have.get(k, 0) for k in expected}},
        f"{split}: class(es) with fewer than min_per_class.{split}={minimum} samples: "
        + _cap([f"{_classes([k], names)} has {have[k]}" for k in low], len(low)))


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
