"""The one guard-for-a-client adapter and its one rule for the reference ("previous")
model: a received model becomes the reference only when verified and not flagged, under
every policy; under warn the client may train on a flagged model that never becomes it."""

import copy

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.data import train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.fl.guarded import ClientGuard
from gradguard.models import build_model


@pytest.fixture(scope="module")
def models():
    train, test = train_test("digits")
    torch.manual_seed(0)
    honest = build_model("mlp", train.image_shape, train.num_classes)
    imprinted = get_attack("imprint", bins=256).manipulate(copy.deepcopy(honest), test)[0]
    later = copy.deepcopy(honest)
    with torch.no_grad():
        for p in later.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    return honest, imprinted, later


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("policy", "trains_on_flagged"), [("warn", True), ("abstain", False), ("strict", False)]
)
def test_previous_is_the_last_verified_unflagged_model(models, policy, trains_on_flagged):
    honest, imprinted, later = models
    guard = Guard(
        GuardConfig(policy=policy, detectors=("architecture", "forensics")),
        template=copy.deepcopy(honest),
    )
    check = ClientGuard(guard)
    assert check(honest) is True and check.verdict.verified and not check.verdict.malicious
    reference = check.previous
    assert all(torch.equal(reference[k], v) for k, v in state(honest).items())

    assert check(imprinted) is trains_on_flagged
    assert check.verdict.malicious
    assert check.previous is reference  # a flagged model never becomes the reference

    nan = copy.deepcopy(later)
    with torch.no_grad():
        nan.fc1.weight[0, 0] = float("nan")
    assert check(nan) is False and not check.verdict.verified  # fails closed, every policy
    assert check.previous is reference

    assert check(later) is True
    assert all(torch.equal(check.previous[k], v) for k, v in state(later).items())
