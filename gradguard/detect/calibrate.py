"""Threshold calibration on honest models only (issue 4 item 4, issue 8 item 7).

Every registered detector scores every honest model of the calibration part of the corpus
(:mod:`gradguard.experiments.honest_corpus`, seeds 1000+, disjoint from the evaluation
part). For each threshold key the proposal is ``max(floor, MARGIN x largest honest
value)``: ``floor`` is the literature anchor (transmit-SNR and D-SNR: 1) or the smallest
structural value that means anything. No attack is ever scored here.

Keys are found generically: the detectors run with every threshold set to a distinct
sentinel (``CEILING`` x its default, the most an override may be, far above any honest
value, so nothing flags), and a finding belongs to the key whose sentinel it was compared
with. A new detector or key (``detector.key`` in
:data:`gradguard.detect.thresholds.DEFAULTS`) is therefore picked up with no edit here;
a check whose findings match no sentinel is reported as unmapped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from gradguard.detect.base import Context, Verdict
from gradguard.detect.thresholds import DEFAULTS

MARGIN = 2.0
# keys whose honest maximum sits close to what attacks reach get a smaller margin
MARGINS = {"exposure.exposed_fraction": 1.2}
CEILING = 100.0  # an override may be at most 100 x its default (thresholds.validate)

# The smallest sensible threshold of a key (anchor or structural minimum); 0 if absent.
FLOORS = {
    "health.max_abs": 1e6,
    "health.collapse": 100.0,  # the output varies by under 1% of its size across inputs
    "architecture.max_abs": 1e6,
    "transmit-snr.ratio": 1.0,
    "forensics.duplicate_rows": 3.0,
    "forensics.trap_signs": 12.0,
    "forensics.dirac_filters": 1.0,
    "forensics.zero_rows": 1.0,
    "forensics.bias_extremity": 10.0,
    "forensics.attention": 1.0,
    "dsnr.ratio": 1.0,
    "exposure.exposed_fraction": 0.4,
    "exposure.pair_fraction": 0.05,  # 3 of 64 samples
    "exposure.silencing": 2.0,
    "exposure.rise": 0.1,
    "exposure.head_collapse": 0.3,
    # lone units per sample: honest layers isolate a sample now and then
    "exposure.lone16": 1.0,
    "exposure.lone32": 0.5,
    "exposure.lone64": 0.25,
}


def sentinels(keys=None) -> dict[str, float]:
    """A distinct threshold per key, as high as an override may go (never reached by honest
    models: a flag under it is reported)."""
    keys = sorted(DEFAULTS if keys is None else keys)
    return {k: CEILING * DEFAULTS[k] * (1.0 - i / 4096) for i, k in enumerate(keys)}


def key_of(threshold: float, marks: Mapping[str, float]) -> str | None:
    """The key whose sentinel ``threshold`` is, if any."""
    if not math.isfinite(threshold):
        return None
    for key, mark in marks.items():
        if math.isclose(threshold, mark, rel_tol=1e-9):
            return key
    return None


@dataclass
class Scores:
    """One model's largest value per key, and the checks that matched no key."""

    values: dict[str, float] = field(default_factory=dict)
    unmapped: set[str] = field(default_factory=set)
    flagged: list[str] = field(default_factory=list)  # a flag here means a broken sentinel


def raw_scores(verdict: Verdict, marks: Mapping[str, float], into: Scores) -> Scores:
    """Fold a verdict's findings (run under ``marks``) into per-key maxima."""
    for f in verdict.findings:
        if f.flagged:
            into.flagged.append(f"{f.check} on {f.layer}: {f.message}")
        key = key_of(f.threshold, marks)
        if key is None:
            into.unmapped.add(f.check)
        elif not math.isnan(f.value):
            into.values[key] = max(into.values.get(key, -math.inf), float(f.value))
    return into


def calibration_detectors(names=None) -> tuple[list, dict[str, float]]:
    """Every registered detector (or ``names``) built with sentinel thresholds."""
    from gradguard.detect import DETECTORS, get_detector

    marks = sentinels()
    return [get_detector(n, marks) for n in (names or DETECTORS)], marks


def score_model(
    state: dict[str, torch.Tensor],
    ctx: Context,
    detectors: list,
    marks: Mapping[str, float],
) -> Scores:
    """Every detector on one honest model; per-key maxima."""
    scores = Scores()
    for det in detectors:
        raw_scores(det.inspect(state, ctx), marks, scores)
    return scores


def propose(maxima: Mapping[str, float]) -> dict[str, float]:
    """``max(floor, MARGIN x honest max)`` per key (keys never measured keep the default)."""
    return {
        key: max(FLOORS.get(key, 0.0), MARGINS.get(key, MARGIN) * maxima[key])
        if key in maxima
        else default
        for key, default in DEFAULTS.items()
    }
