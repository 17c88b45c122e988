"""Client-side detection of tampered global models (seed 000, sections 3 and 5).

``Guard(GuardConfig(...), template=model, data=local_sample).check(state) -> Verdict``.
Detectors register here as ``name -> "module:Class"``: one file and one line each.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from gradguard.detect.base import Context, Detector, Finding, Verdict
from gradguard.errors import GradguardError

# Cheapest first: the Guard runs them in this order.
DETECTORS: dict[str, str] = {
    "health": "gradguard.detect.health:Health",
    "architecture": "gradguard.detect.architecture:ArchitectureCheck",
    "forensics": "gradguard.detect.forensics:Forensics",
    "transmit-snr": "gradguard.detect.filters:TransmitSNR",
    "dsnr": "gradguard.detect.dsnr:DSNR",
    "warmup": "gradguard.detect.warmup:WarmUp",  # seed 000 s.5 read literally (change / 1e-8)
    "warmup-paper": "gradguard.detect.warmup_paper:WarmUpPaper",  # the reading matching its numbers
    "warmup+": "gradguard.detect.warmup_plus:WarmUpPlus",
    # runs even after an earlier detector flags: it says what the round would expose
    "exposure": "gradguard.detect.exposure:ExposureAudit",
}


def get_detector(name: str, thresholds: Mapping[str, float] | None = None, **options) -> Detector:
    """A detector from the registry; ``thresholds`` override by ``"detector.key"``."""
    if name not in DETECTORS:
        raise GradguardError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    module, cls = DETECTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(thresholds=thresholds, **options)


from gradguard.detect.guard import Guard, GuardConfig  # noqa: E402

__all__ = [
    "DETECTORS",
    "Context",
    "Detector",
    "Finding",
    "Guard",
    "GuardConfig",
    "Verdict",
    "get_detector",
]
