"""Calibration maps every check of every registered detector to a threshold key."""

from __future__ import annotations

from dataclasses import replace

from gradguard.detect import DETECTORS
from gradguard.detect.base import MARGIN, Context, Finding
from gradguard.detect.calibrate import (
    calibration_detectors,
    checks_to_keys,
    key_of,
    propose,
    score_model,
    sentinels,
)
from gradguard.detect.registry import declared_thresholds
from gradguard.detect.thresholds import DEFAULTS


def test_every_check_maps_to_a_key_and_every_key_is_measured(honest, digits):
    _, local, _ = digits
    detectors, marks = calibration_detectors()
    assert [d.name for d in detectors] == list(DETECTORS)
    measured: set[str] = set()
    for name in ("mlp", "convnet", "vit"):
        model = honest[name]
        s = score_model(model.state_dict(), Context(model, local), detectors, marks)
        assert not s.unmapped, (name, s.unmapped)
        assert not s.flagged, (name, s.flagged)  # sentinels are never reached
        measured |= set(s.values)
    # measured only with a previous model (moved), under the strict policy, on a collapsed
    # output, or
    # (the readout) where rows isolate samples near the lone-unit bar
    situational = {
        "exposure.rise",
        "exposure.readout",
        "exposure.strict_fraction",
        "health.head_collapse",
        *(f"moved.{kind}{size}" for kind in ("lone", "all") for size in (16, 32, 64)),
    }
    assert measured == set(DEFAULTS) - situational


def test_proposal_is_margin_times_honest_max_above_the_floor():
    maxima = {"warmup+.z": 250.0, "dsnr.ratio": 0.2}
    out = propose(maxima)
    assert out["warmup+.z"] == MARGIN * 250.0
    assert out["dsnr.ratio"] == declared_thresholds()["dsnr.ratio"].floor == 1.0  # anchor > 0.4
    assert out["forensics.attention"] == DEFAULTS["forensics.attention"]  # not measured


def test_a_finding_counts_only_for_its_declared_key_under_that_keys_sentinel():
    marks, keys = sentinels(), checks_to_keys()
    f = Finding("dsnr", "conv1", 0.5, marks["dsnr.ratio"], "", flagged=False)
    assert key_of(f, marks, keys) == "dsnr.ratio"
    assert key_of(replace(f, threshold=marks["warmup.z"]), marks, keys) is None
    assert key_of(replace(f, check="dsnr.other"), marks, keys) is None
