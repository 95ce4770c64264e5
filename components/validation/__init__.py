"""The checks behind the `validate` stage: the GX suite, cross-split checks and drift.

Helpers only: the stage itself (`validate`, `accept_profile`, the report and error types) is
`components.validate`, which this package never imports.
"""

from __future__ import annotations

from components.validation.checks import check_dataset
from components.validation.drift import HIST_BINS, check_drift, profile_dataset
from components.validation.gx_suite import run_expectations
from components.validation.records import SHOWN, Record

__all__ = ["HIST_BINS", "SHOWN", "Record", "check_dataset", "check_drift", "profile_dataset",
           "run_expectations"]
