"""Thresholds by ``"detector.key"``: their defaults, validation and resolution.

Each detector declares the thresholds it reads (``THRESHOLDS``, a tuple of
:class:`~gradguard.detect.base.Threshold`, in its own file); :data:`DEFAULTS` is read from
those declarations through the registry. Every default was set from honest models only:
``python benchmarks/calibrate.py`` scores the calibration part of the honest corpus
(gradguard/experiments/honest_corpus.py: every zoo family, five optimisers, digits,
Fashion-MNIST and colour photo patches, seeds 1000+, disjoint from the evaluation part) and
proposes ``max(floor, 2 x largest honest value)`` (rounded up to 3 digits);
benchmarks/results/calibrate.md has the maxima and where they were measured. Where a
literature anchor exists (transmit-SNR and D-SNR flag above 1) it is the floor. No value
was tuned on attacks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping

from gradguard.detect.base import Detector
from gradguard.detect.registry import declared_thresholds, detector_class
from gradguard.errors import GradguardError


def defaults() -> dict[str, float]:
    """``"detector.key" -> default`` of every threshold the registered detectors declare."""
    return {key: float(t.default) for key, t in declared_thresholds().items()}


class _Declared(Mapping[str, float]):
    """:func:`defaults` as a read-only mapping, read from the registry at each use (a
    detector registered later is included)."""

    def __getitem__(self, key: str) -> float:
        return defaults()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(defaults())

    def __len__(self) -> int:
        return len(defaults())

    def __repr__(self) -> str:
        return repr(dict(self))


DEFAULTS: Mapping[str, float] = _Declared()

# An override must be finite and lie in (0, MAX_RATIO x default]: far above it a detector
# never flags (NaN, inf, 1e300 all disarm it). Lower values only make a detector stricter.
MAX_RATIO = 100.0


class ConfigError(GradguardError, ValueError):
    """An invalid Guard configuration: refused loudly, never silently disarming a check."""


def validate(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """``overrides`` as floats, or :class:`ConfigError` naming the first bad entry.

    Keys must be in :data:`DEFAULTS` (whatever detectors registered there); each value must be
    a finite number with ``0 < value <= MAX_RATIO x default``.
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"thresholds must be a mapping of 'detector.key' to numbers, "
            f"got {type(overrides).__name__}"
        )
    known = defaults()
    out: dict[str, float] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown threshold {key!r}; valid: {', '.join(sorted(known))}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"threshold {key}={value!r} is not a number")
        v = float(value)
        top = MAX_RATIO * known[key]
        if not math.isfinite(v) or not 0 < v <= top:
            raise ConfigError(
                f"threshold {key}={value!r} would disarm the check: it must be finite, "
                f"> 0 and <= {top:g} ({MAX_RATIO:g} x the calibrated {known[key]:g})"
            )
        out[key] = v
    return out


def resolve(
    detector: str | Detector | type[Detector], overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The thresholds ``detector`` (a registered name, a detector or its class) declares,
    keys without its name, overrides validated and applied (:class:`ConfigError` on an
    unknown key or a disarming value)."""
    declaring = detector_class(detector) if isinstance(detector, str) else detector
    given = validate(overrides)
    return {
        t.key: given.get(f"{declaring.name}.{t.key}", float(t.default))
        for t in declaring.THRESHOLDS
    }
