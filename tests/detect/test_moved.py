import copy

import pytest
import torch

from gradguard.bench.attack_round import run_attack
from gradguard.data import train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.base import Context
from gradguard.detect.moved import MovedUnits
from gradguard.detect.registry import DEFAULT_DETECTORS
from gradguard.fl.client import train_sgd

ADAPTIVE = dict(signs="binomial", sigma="honest", bias="honest", traps=32)


@pytest.fixture(scope="module")
def hidden_traps():
    """32 trap rows among 256 honest ones of an mlp on digits (batch 16), and the honest
    model it was built from (the client's last accepted one)."""
    r = run_attack("curious", dataset="digits", model="mlp", batch_size=16, neurons=256, **ADAPTIVE)
    assert r.leaked_fraction >= 0.25  # the attack works
    state = {k: v.detach() for k, v in r.manipulated.state_dict().items()}
    honest = {k: v.detach() for k, v in r.honest.state_dict().items()}
    return state, honest, copy.deepcopy(r.honest)


@pytest.fixture(scope="module")
def local():
    return train_test("digits", limit=600, seed=0)[0]


def test_hidden_trap_rows_are_flagged_against_the_last_accepted_model(hidden_traps, local):
    state, honest, template = hidden_traps
    v = MovedUnits().inspect(state, Context(template, local, honest))
    assert v.malicious and v.verified
    assert v.metadata["moved"]["lone"]["units"] == {"fc1": 32}
    opted_in = GuardConfig(detectors=(*DEFAULT_DETECTORS, "moved"), stop_at_first=False)
    guard = Guard(opted_in, template=template, data=local)
    assert guard.check(state, honest).malicious


def test_first_contact_has_no_finding(hidden_traps, local):
    state, _, template = hidden_traps
    v = MovedUnits().inspect(state, Context(template, local, None))
    assert not v.malicious and v.findings == []


def test_an_honest_round_from_the_fresh_init_passes(local):
    torch.manual_seed(0)
    from gradguard.models import build_model

    model = build_model("mlp", local.image_shape, local.num_classes, width=256)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_sgd(model, local, lr=0.5)  # a large first step: rows move by much of their norm
    after = {k: v.detach() for k, v in model.state_dict().items()}
    v = MovedUnits().inspect(after, Context(copy.deepcopy(model), local, before))
    assert v.verified and not v.malicious
