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

from collections.abc import Mapping

DEFAULTS: dict[str, float] = {
    # health: a model beyond these has diverged (cannot verify, no attack named)
    "health.max_abs": 1e6,  # largest |value| of the state
    # mean |logit| / largest spread across local inputs, with one class predicted for all
    "health.collapse": 100.0,
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
}

# Fixed parameters of the statistics (not decision thresholds).
DIRAC_RATIO = 1.0  # a filter whose largest entry outweighs all the others together
DUPLICATE_COSINE = 0.999


def resolve(detector: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The thresholds of ``detector`` (keys without the prefix), overrides applied."""
    prefix = detector + "."
    merged = {**DEFAULTS, **(overrides or {})}
    return {k[len(prefix) :]: float(v) for k, v in merged.items() if k.startswith(prefix)}
