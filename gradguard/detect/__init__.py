"""Client-side detection of tampered global models (seed 000, sections 3 and 5).

``Guard(GuardConfig(...), template=model, data=local_sample).check(state) -> Verdict``.
Detectors register in :mod:`gradguard.detect.registry`: one file and one line each.
"""

from __future__ import annotations

from gradguard.detect.base import Context, Detector, Finding, Threshold, Verdict
from gradguard.detect.guard import Guard, GuardConfig
from gradguard.detect.registry import DEFAULT_DETECTORS, DETECTORS, get_detector

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "Context",
    "Detector",
    "Finding",
    "Guard",
    "GuardConfig",
    "Threshold",
    "Verdict",
    "get_detector",
]
