"""Default thresholds, by ``"detector.key"``.

Every value here was set from honest models only: ``python benchmarks/calibrate.py``
scores the calibration part of the honest corpus (gradguard/experiments/honest_corpus.py:
every zoo family, five optimisers, digits, Fashion-MNIST and colour photo patches, seeds
1000+, disjoint from the evaluation part) and proposes ``max(floor, 2 x largest honest
value)`` (rounded up to 3 digits); benchmarks/results/calibrate.md has the maxima and where
they were measured. Where a literature anchor exists (transmit-SNR and D-SNR flag above 1)
it is the floor. No value was tuned on attacks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from gradguard.errors import GradguardError

DEFAULTS: dict[str, float] = {
    # health: a model beyond these has diverged (cannot verify, no attack named)
    "health.max_abs": 1e6,  # largest |value| of the state
    # mean |logit| / largest spread across local inputs, with one class predicted for all
    "health.collapse": 100.0,
    # a collapsed output with a head this collapsed is class fishing, not divergence (as
    # exposure.head_collapse; diverged corpus models that collapse: at most 0.30)
    "health.head_collapse": 0.469,
    # architecture: largest |value| a float entry may hold before the model is unverifiable
    "architecture.max_abs": 1e6,
    # transmit-SNR of first-conv filters (anchors: benign < 1, Dirac ~1e6; honest corpus
    # reaches 0.717 on a Fashion-MNIST convnet, so 2x that is above the anchor)
    "transmit-snr.ratio": 1.44,
    # forensics
    "forensics.duplicate_rows": 3.0,  # rows of one linear layer with a near-identical twin
    "forensics.trap_signs": 12.0,  # -log10 p of rows with exactly half negative weights
    "forensics.dirac_filters": 1.0,  # conv filters with transmit ratio >= dirac_ratio
    "forensics.zero_rows": 1.0,  # all-zero rows in the first or last linear layer
    "forensics.bias_extremity": 10.0,  # last-layer max|b| / median row norm
    "forensics.attention": 1.0,  # attention layers with zeroed queries or identity keys
    # D-SNR (anchor: flag above 1; an honest Fashion-MNIST mlp under AdamW reaches 1.36)
    "dsnr.ratio": 2.73,
    # warm-up Z-score (seed 000, section 5): any |Z| above this flags
    "warmup.z": 5.12e8,
    "warmup+.z": 3610.0,
    "warmup-paper.z": 365.0,  # 2 x 182, the honest max of the broad calibration corpus
    # exposure (leakage audit, probe batch of 64), calibrated on the broad honest corpus
    # samples any known decoder returns at >= 30 dB: honest models reach 1.0 (64 of 64), so
    # this alone never flags tampering; it is the client's own exposure (strict policy)
    "exposure.exposed_fraction": 1.2,
    "exposure.pair_fraction": 0.05,  # isolated by pairs cancelling >= 8x, 4+ classes
    "exposure.silencing": 3.03,  # effective speakers by the head's errors / below the head
    "exposure.rise": 0.25,  # exposed share above the last accepted model's
    # 1 - effective rank / (C - 1) of the head's centred rows (honest max 0.234)
    "exposure.head_collapse": 0.469,
    "exposure.strict_fraction": 0.05,  # policy "strict": own exposure above this abstains
    # units live for one sample alone, per sample (each counted <= 4), in sub-batches of 16,
    # 32 and 64 of the probe; a flag also needs 2x a fresh init of the client's architecture
    # (trap weights; issue 8). Honest max 1.28, 0.484, 0.234 (calibration part)
    "exposure.lone16": 2.57,
    "exposure.lone32": 0.969,
    "exposure.lone64": 0.469,
}

# Fixed parameters of the statistics (not decision thresholds).
DIRAC_RATIO = 1.0  # a filter whose largest entry outweighs all the others together
DUPLICATE_COSINE = 0.999


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
    out: dict[str, float] = {}
    for key, value in overrides.items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown threshold {key!r}; valid: {', '.join(sorted(DEFAULTS))}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"threshold {key}={value!r} is not a number")
        v = float(value)
        top = MAX_RATIO * DEFAULTS[key]
        if not math.isfinite(v) or not 0 < v <= top:
            raise ConfigError(
                f"threshold {key}={value!r} would disarm the check: it must be finite, "
                f"> 0 and <= {top:g} ({MAX_RATIO:g} x the calibrated {DEFAULTS[key]:g})"
            )
        out[key] = v
    return out


def resolve(detector: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The thresholds of ``detector`` (keys without the prefix), overrides validated and
    applied (:class:`ConfigError` on an unknown key or a disarming value)."""
    prefix = detector + "."
    merged = {**DEFAULTS, **validate(overrides)}
    return {k[len(prefix) :]: float(v) for k, v in merged.items() if k.startswith(prefix)}
