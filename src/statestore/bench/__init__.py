"""Benchmarks: the scenarios shared by ``benchmarks/`` (pytest-benchmark) and the
``statestore bench`` command, the subjects they run on (a registered backend, or the
raw-driver baseline on the same schema) and the workload data."""

from .scenarios import SCENARIOS, Measurement, Prepared, Scenario, measure, run_concurrency
from .subjects import RAW, Subject, Target, make_subject

__all__ = [
    "SCENARIOS",
    "Measurement",
    "Prepared",
    "Scenario",
    "measure",
    "run_concurrency",
    "RAW",
    "Subject",
    "Target",
    "make_subject",
]
