"""Thresholds: declared by each detector, defaults read from the registry, overrides
validated (unknown keys and disarming values refused)."""

import pytest

from gradguard.detect import DETECTORS, GuardConfig
from gradguard.detect.registry import declared_thresholds, detector_class
from gradguard.detect.thresholds import DEFAULTS, MAX_RATIO, ConfigError, resolve, validate

# The table thresholds.py held before each detector declared its own (benchmarks/results/
# calibrate.md): the declarations must reproduce it exactly. Change it only with a
# recalibration.
CALIBRATED: dict[str, float] = {
    # health: a model beyond these has diverged (cannot verify, no attack named)
    "health.max_abs": 1e6,  # largest |value| of the state
    # mean |logit| / largest spread across local inputs, with one class predicted for all
    "health.collapse": 100.0,
    # a collapsed output with a head this collapsed is class fishing (issue 8)
    "health.head_collapse": 0.469,
    # architecture: largest |value| a float entry may hold before the model is unverifiable
    "architecture.max_abs": 1e6,
    # layer scale: weight-tensor norms over a fresh init's (amplification; honest corpus
    # grown: 2x the max of long high-lr training, 12.4; shrunk: 2x the corpus max 1.235)
    "scale.grown": 25.0,
    "scale.shrunk": 2.47,
    # rewritten rows that fire for one sample alone, per sample (2x long high-lr training)
    "moved.lone16": 0.1,
    "moved.lone32": 0.05,
    "moved.lone64": 0.05,
    "moved.all16": 1.67,
    "moved.all32": 0.6,
    "moved.all64": 0.22,
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
    "forensics.attention_blindness": 5.0,  # -log10 TV of attention rows across queries
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
    # lone units per sample in batches of 16/32/64 over the mean of 4 fresh inits of the
    # client's architecture (trap weights; honest max 0.396/0.103/0.064: the floors hold)
    "exposure.lone16": 0.8,
    "exposure.lone32": 0.4,
    "exposure.lone64": 0.2,
    # dB the images come back linearly from a convnet's fc1 input over fresh inits (a
    # linear pass-through; honest corpus convnets within about +7, pass-throughs +20 up)
    "exposure.readout": 15.0,
}

# calibrate.py's floors and margins before they moved into the declarations
FLOORS: dict[str, float] = {
    "health.max_abs": 1e6,
    "health.collapse": 100.0,  # the output varies by under 1% of its size across inputs
    "architecture.max_abs": 1e6,
    "scale.grown": 2.0,
    "scale.shrunk": 2.0,
    "moved.lone16": 0.05,  # 3 lone units per batch of 64
    "moved.lone32": 0.05,
    "moved.lone64": 0.05,
    "moved.all16": 0.05,
    "moved.all32": 0.05,
    "moved.all64": 0.05,
    "transmit-snr.ratio": 1.0,
    "forensics.duplicate_rows": 3.0,
    "forensics.trap_signs": 12.0,
    "forensics.dirac_filters": 1.0,
    "forensics.zero_rows": 1.0,
    "forensics.bias_extremity": 10.0,
    "forensics.attention": 1.0,
    "forensics.attention_blindness": 4.0,
    "dsnr.ratio": 1.0,
    "exposure.exposed_fraction": 0.4,
    "exposure.pair_fraction": 0.05,  # 3 of 64 samples
    "exposure.silencing": 2.0,
    "exposure.rise": 0.1,
    "exposure.head_collapse": 0.3,
    # lone units per sample over a fresh init: 12.8 more lone units per batch
    "exposure.lone16": 0.8,
    "exposure.lone32": 0.4,
    "exposure.lone64": 0.2,
    "exposure.readout": 15.0,
}
MARGINS = {"exposure.exposed_fraction": 1.2, "forensics.attention_blindness": 1.3}


def test_declared_defaults_are_the_calibrated_table():
    assert dict(DEFAULTS) == CALIBRATED
    declared = declared_thresholds()
    assert {k: t.floor for k, t in declared.items() if t.floor} == FLOORS
    assert {k: t.margin for k, t in declared.items() if t.margin != 2.0} == MARGINS


def test_each_detector_declares_its_own_keys_and_checks():
    declared = declared_thresholds()
    checks = [t.check for t in declared.values()]
    assert len(set(checks)) == len(checks)  # one key per check: calibration is unambiguous
    for name in DETECTORS:
        cls = detector_class(name)
        assert [f"{name}.{t.key}" for t in cls.THRESHOLDS] == [
            k for k in declared if k.rsplit(".", 1)[0] == name
        ]
        assert set(resolve(name)) == {t.key for t in cls.THRESHOLDS}


def test_unknown_keys_are_an_error_everywhere():
    for bad in ("forensics.cosine", "warmup+.zz", "nope", "forensics"):
        with pytest.raises(ConfigError, match="unknown threshold"):
            validate({bad: 1.0})
        with pytest.raises(ConfigError, match="unknown threshold"):
            GuardConfig(thresholds={bad: 1.0})


def test_threshold_range_follows_defaults():
    for key, default in DEFAULTS.items():
        detector, name = key.rsplit(".", 1)
        assert resolve(detector, {key: MAX_RATIO * default})[name] == MAX_RATIO * default
        with pytest.raises(ConfigError, match="disarm"):
            resolve(detector, {key: MAX_RATIO * default * 1.01})
    with pytest.raises(ConfigError) as e:
        resolve("warmup+", {"warmup+.zz": 1.0})
    assert all(k in str(e.value) for k in DEFAULTS)  # the error lists every valid key


def test_an_override_reaches_only_its_detector():
    assert resolve("warmup+", {"warmup.z": 7.0, "warmup+.z": 9.0}) == {"z": 9.0}
    assert resolve("warmup", {"warmup+.z": 9.0}) == {"z": CALIBRATED["warmup.z"]}
