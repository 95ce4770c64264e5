"""The checks behind the `validate` stage: the GX suites, cross-split checks, drift, Data Docs.

Helpers only: the stage itself (`validate`, `accept_profile`, the report and error types) is
`components.validate`, which this package never imports.
"""

from __future__ import annotations

from components.validation.checks import check_dataset
from components.validation.data_docs import make_offline
from components.validation.drift import HIST_BINS, check_drift, profile_dataset
from components.validation.gx_dataset import DerivedAsset, derive_assets, link_checks
from components.validation.gx_suite import run_expectations
from components.validation.records import SHOWN, Record

__all__ = ["HIST_BINS", "SHOWN", "DerivedAsset", "Record", "check_dataset", "check_drift",
           "derive_assets", "link_checks", "make_offline", "profile_dataset", "run_expectations"]
