"""The health check: a diverged model is "cannot verify" and names no attack."""

from __future__ import annotations

import copy
import math

from gradguard.detect import Guard, get_detector
from gradguard.detect.base import Context
from gradguard.experiments import honest_corpus as hc

ATTACK_WORDS = ("imprint", "trap", "fishing", "dirac", "attention", "bias")


def _unverified_without_attack(guard, state, expect):
    v = guard.check(state)
    assert v.malicious and not v.verified and not guard.allows(v)
    text = v.summary().lower()
    assert expect in text, text
    assert not any(w in text for w in ATTACK_WORDS), text
    return v


def test_honest_models_are_healthy(honest, digits):
    _, local, _ = digits
    health = get_detector("health")
    for name, model in honest.items():
        v = health.inspect(model.state_dict(), Context(model, local))
        assert not v.malicious and v.verified, (name, v.summary())


def test_nan_exploded_and_dead_models_cannot_be_verified(honest, digits):
    _, local, _ = digits
    mlp = honest["mlp"]
    guard = Guard(template=mlp, data=local)
    nan = copy.deepcopy(mlp.state_dict())
    nan["fc2.weight"][0, 0] = math.nan
    _unverified_without_attack(guard, nan, "non-finite")
    exploded = {k: v * 1e7 for k, v in mlp.state_dict().items()}
    _unverified_without_attack(guard, exploded, "diverged")
    dead = copy.deepcopy(mlp.state_dict())
    dead["fc1.bias"].fill_(-1e3)  # every first-layer ReLU off: the output ignores the input
    _unverified_without_attack(guard, dead, "collapsed")


def test_a_really_diverged_run_is_unverified_not_an_imprint(tmp_path, digits):
    """SGD at lr 50 makes the rows of fc1 near-parallel: forensics alone calls that an
    imprint layer; the Guard must say the model diverged."""
    run = hc.RunSpec(
        "diverged",
        "mlp",
        None,
        "sgd-lr-50",
        "digits",
        "iid",
        2000,
        rounds=1,
        limit=200,
        snapshots=(1,),
    )
    (m,) = hc.models([run], tmp_path)
    guard = Guard(template=m.template, data=m.data)
    v = _unverified_without_attack(guard, m.state, "diverged")
    assert v.detector == "guard[health]"
    assert m.accuracy < 0.2


def test_class_fishing_is_named_not_called_diverged():
    """The textbook class-fishing head collapses the output too, but through its own rows
    (one direction kept): the verdict names fishing and stays verified, so the Guard still
    says what the round would expose."""
    import copy

    from gradguard.bench.attack_round import run_attack
    from gradguard.data import train_test
    from gradguard.detect import Guard, GuardConfig

    r = run_attack("fishing-class", dataset="digits", model="convnet", batch_size=16, iterations=5)
    local = train_test("digits", limit=300)[0]
    state = {k: v.detach() for k, v in r.manipulated.state_dict().items()}
    v = Guard(GuardConfig(), template=copy.deepcopy(r.honest), data=local).check(state)
    assert v.malicious and v.verified
    assert any(f.check == "health.fishing-head" and f.flagged for f in v.findings)
    assert "exposure" in v.metadata
