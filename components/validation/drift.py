"""Drift against an accepted reference profile: class shares and the training pixel histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import ValidateConfig
from components.core.io import read_json
from components.validation.records import Record, _check, _name

HIST_BINS = 20


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
