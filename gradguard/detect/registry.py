"""The detector registry: ``name -> "module:Class"``, one line per detector.

A detector is one file (its class declares the thresholds it reads, ``THRESHOLDS``) plus
one line here; the threshold defaults (:data:`gradguard.detect.thresholds.DEFAULTS`), their
validation and calibration are derived from these declarations.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from gradguard.detect.base import Detector, Threshold
from gradguard.errors import GradguardError

# Cheapest first: the Guard runs them in this order.
DETECTORS: dict[str, str] = {
    "health": "gradguard.detect.health:Health",
    "architecture": "gradguard.detect.architecture:ArchitectureCheck",
    "forensics": "gradguard.detect.forensics:Forensics",
    "transmit-snr": "gradguard.detect.filters:TransmitSNR",
    # after the signature checks: an imprint or trap layer is named by them, not as a gain
    "scale": "gradguard.detect.scale:LayerScale",  # weight norms vs a fresh init (amplification)
    # rows rewritten since the last accepted model that isolate samples (hidden trap rows)
    "moved": "gradguard.detect.moved:MovedUnits",
    "dsnr": "gradguard.detect.dsnr:DSNR",
    "warmup": "gradguard.detect.warmup:WarmUp",  # seed 000 s.5 read literally (change / 1e-8)
    "warmup-paper": "gradguard.detect.warmup_paper:WarmUpPaper",  # the reading matching its numbers
    "warmup+": "gradguard.detect.warmup_plus:WarmUpPlus",
    # runs even after an earlier detector flags: it says what the round would expose
    "exposure": "gradguard.detect.exposure:ExposureAudit",
}

# The Guard's default set (GuardConfig, ``gradguard scan``). warmup+ is not in it: on the
# frontier no leaking point is flagged by it alone, and it costs 4-10% of a local epoch
# (benchmarks/results/detector_cost.md). moved is not in it: against a last accepted model
# several rounds old, honest high-lr training trips it (benchmarks/results/moved_gaps.md).
DEFAULT_DETECTORS: tuple[str, ...] = (
    "architecture",
    "forensics",
    "transmit-snr",
    "scale",
    "exposure",
)


def detector_class(name: str) -> type[Detector]:
    """The class registered as ``name``."""
    if name not in DETECTORS:
        raise GradguardError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    module, cls = DETECTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_detector(name: str, thresholds: Mapping[str, float] | None = None, **options) -> Detector:
    """A detector from the registry; ``thresholds`` override by ``"detector.key"``."""
    return detector_class(name)(thresholds=thresholds, **options)


def declared_thresholds() -> dict[str, Threshold]:
    """``"detector.key" -> Threshold`` of every registered detector, in registry order."""
    return {f"{name}.{t.key}": t for name in DETECTORS for t in detector_class(name).THRESHOLDS}
