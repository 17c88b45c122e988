"""Guard configuration is refused loudly, and a Guard that could not run a check says so."""

import math

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.thresholds import ConfigError
from gradguard.models import build_model

STATIC = ("architecture", "forensics", "transmit-snr")


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"detectors": ()}, "empty detector set"),
        ({"detectors": ("architecture", "nope")}, "unknown detector"),
        ({"detectors": "architecture"}, "tuple of names"),
        ({"policy": "off"}, "unknown policy"),
        ({"thresholds": {"warmup+.z": math.nan}}, "disarm"),
        ({"thresholds": {"forensics.duplicate_rows": math.inf}}, "disarm"),
        ({"thresholds": {"warmup+.z": 1e300}}, "disarm"),
        ({"thresholds": {"dsnr.ratio": -1.0}}, "disarm"),
        ({"thresholds": {"dsnr.ratio": "3"}}, "not a number"),
        ({"thresholds": {"warmup+.zz": 3.0}}, "unknown threshold"),
        ({"options": {"nope": {}}}, "options"),
    ],
)
def test_invalid_configurations_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        GuardConfig(**kw)


def test_no_local_data_fails_closed_unless_only_data_free_detectors(mlp):
    honest = {k: v.clone() for k, v in mlp.state_dict().items()}
    v = Guard(template=mlp).check(honest)  # the default detectors include exposure
    assert not v.verified and not Guard(template=mlp).allows(v)
    assert v.metadata["skipped"] == {"exposure": "needs local data and none was given"}
    assert "exposure" in v.summary()
    v = Guard(GuardConfig(detectors=STATIC), template=mlp).check(honest)
    assert v.verified and not v.malicious
    assert v.metadata["ran"] == ["health", *STATIC] and v.metadata["skipped"] == {}


def test_verdict_lists_detectors_run_and_skipped(mlp, digits):
    bad, _ = get_attack("imprint").manipulate(build_model("mlp", (1, 8, 8), 10), digits[2])
    v = Guard(template=mlp).check(bad.state_dict())
    assert v.malicious and v.verified  # flagged by forensics: a real verdict
    assert v.metadata["ran"] == ["health", "architecture", "forensics"]
    assert set(v.metadata["skipped"]) == {"transmit-snr", "scale", "exposure"}


def test_expanded_views_and_oversize_states_are_unverifiable(mlp):
    guard = Guard(GuardConfig(detectors=STATIC), template=mlp)
    state = {k: v.clone() for k, v in mlp.state_dict().items()}
    w = state["fc1.weight"]
    expanded = dict(state, **{"fc1.weight": torch.zeros(1).expand(*w.shape)})
    v = guard.check(expanded)
    assert not v.verified and "expanded view" in v.summary()
    huge = dict(state, extra=torch.zeros(10**6))
    v = guard.check(huge)
    assert not v.verified and "bytes" in v.summary()
