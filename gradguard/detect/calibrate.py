"""Threshold calibration on honest models only (issue 4 item 4, issue 8 item 7).

Every registered detector scores every honest model of the calibration part of the corpus
(:mod:`gradguard.experiments.honest_corpus`, seeds 1000+, disjoint from the evaluation
part). For each threshold key the proposal is ``max(floor, margin x largest honest
value)``: ``floor`` (the literature anchor, transmit-SNR and D-SNR: 1, or the smallest
structural value that means anything) and ``margin`` are declared with the threshold
(:class:`~gradguard.detect.base.Threshold`, on each detector class). No attack is ever
scored here.

A finding's value counts for the key whose declared ``check`` it carries. The detectors run
with every threshold set to a distinct sentinel (``CEILING`` x its default, the most an
override may be, far above any honest value, so nothing flags), and a finding counts only
when it was compared with that key's sentinel: a declaration naming the wrong check is
reported as unmapped, never folded into another key. A new detector or key is therefore
picked up with no edit here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from gradguard.detect.base import Context, Finding, Verdict
from gradguard.detect.registry import DETECTORS, declared_thresholds, get_detector
from gradguard.detect.thresholds import MAX_RATIO, defaults

CEILING = MAX_RATIO  # an override may be at most this x its default (thresholds.validate)


def sentinels(keys=None) -> dict[str, float]:
    """A distinct threshold per key, as high as an override may go (never reached by honest
    models: a flag under it is reported)."""
    known = defaults()
    keys = sorted(known if keys is None else keys)
    return {k: CEILING * known[k] * (1.0 - i / 4096) for i, k in enumerate(keys)}


def checks_to_keys() -> dict[str, str]:
    """``finding check -> "detector.key"`` from the declarations of the registered detectors."""
    return {t.check: key for key, t in declared_thresholds().items()}


def key_of(f: Finding, marks: Mapping[str, float], keys: Mapping[str, str]) -> str | None:
    """The key finding ``f`` measures: the one declaring its check (``keys``, from
    :func:`checks_to_keys`), if ``f`` was compared with that key's sentinel in ``marks``."""
    key = keys.get(f.check)
    if key is None or key not in marks or not math.isfinite(f.threshold):
        return None
    return key if math.isclose(f.threshold, marks[key], rel_tol=1e-9) else None


@dataclass
class Scores:
    """One model's largest value per key, and the checks that matched no key."""

    values: dict[str, float] = field(default_factory=dict)
    unmapped: set[str] = field(default_factory=set)
    flagged: list[str] = field(default_factory=list)  # a flag here means a broken sentinel


def raw_scores(verdict: Verdict, marks: Mapping[str, float], into: Scores) -> Scores:
    """Fold a verdict's findings (run under ``marks``) into per-key maxima."""
    keys = checks_to_keys()
    for f in verdict.findings:
        if f.flagged:
            into.flagged.append(f"{f.check} on {f.layer}: {f.message}")
        key = key_of(f, marks, keys)
        if key is None:
            into.unmapped.add(f.check)
        elif not math.isnan(f.value):
            into.values[key] = max(into.values.get(key, -math.inf), float(f.value))
    return into


def calibration_detectors(names=None) -> tuple[list, dict[str, float]]:
    """Every registered detector (or ``names``) built with sentinel thresholds."""
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
    """``max(floor, margin x honest max)`` per key (keys never measured keep the default)."""
    return {
        key: max(t.floor, t.margin * maxima[key]) if key in maxima else float(t.default)
        for key, t in declared_thresholds().items()
    }
