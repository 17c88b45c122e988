"""Every detector's verdict: with ``stop_at_first=False`` the Guard runs all its detectors on
an imprint-manipulated model, and its verdict (flagged, first reason) is the default's."""

import copy

from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import build, make_attack
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.breakdown import detector_breakdown, exposure_counts


def test_run_every_detector_same_verdict():
    sc = Scenario(clients=2)
    setup = build(sc)
    manipulated, _ = make_attack(sc).manipulate(copy.deepcopy(setup.model), setup.aux)
    state = manipulated.state_dict()
    default = Guard(template=copy.deepcopy(setup.model), data=setup.parts[0]).check(state)
    every = Guard(
        GuardConfig(stop_at_first=False), template=copy.deepcopy(setup.model), data=setup.parts[0]
    ).check(state)
    assert default.malicious and every.malicious
    assert default.summary().split("; ")[1] == every.summary().split("; ")[1]  # first reason
    skipped = detector_breakdown(default)
    assert "skipped" in skipped["transmit-snr"]  # the default stops after forensics flags
    ran = detector_breakdown(every)
    assert list(ran) == ["health", "architecture", "forensics", "transmit-snr", "scale", "exposure"]
    assert all("score" in d for d in ran.values())
    assert ran["forensics"]["malicious"] and "imprint" in ran["forensics"]["reason"]
    assert not ran["architecture"]["malicious"]
    exposed, batch = exposure_counts(every)
    assert batch == 64 and exposed > 0
