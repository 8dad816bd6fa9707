"""Benchmarks: the scenarios shared by ``benchmarks/`` (pytest-benchmark) and the
``statestore bench`` command, the subject they run on (a registered backend, through
the public API) and the workload data. The raw-driver baseline lives in
``benchmarks/``, outside the package."""

from .scenarios import SCENARIOS, Measurement, Prepared, Scenario, measure, run_concurrency
from .subjects import Storage, StoreSubject, Subject, Target, make_subject

__all__ = [
    "SCENARIOS",
    "Measurement",
    "Prepared",
    "Scenario",
    "measure",
    "run_concurrency",
    "Storage",
    "StoreSubject",
    "Subject",
    "Target",
    "make_subject",
]
