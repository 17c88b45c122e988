"""The linear readout of the client's images through convolutions (detect/readout.py), and
the audit's verdict on trap rows behind a pass-through."""

import copy

import pytest
import torch

from gradguard.bench.attack_round import run_attack
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.readout import image_readout
from gradguard.models import build_model

#: The white-box attacker's pass-through (blurred kernels, honest unused channels, honest
#: scales and biases) with 32 trap rows: under the lone-unit thresholds at batch 64.
FEW_TRAPS = dict(
    signs="binomial", sigma="honest", bias="honest", conv_mix=0.6, honest_channels=True, traps=32
)


@pytest.fixture(scope="module")
def few_traps():
    return run_attack("curious", "digits", "convnet", batch_size=64, neurons=1000, **FEW_TRAPS)


def state(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_pass_through_gives_images_back_and_honest_convolutions_do_not(few_traps, digits):
    _, local, _ = digits
    fit, test = local.x[64:], local.x[:64]
    attacked = image_readout(few_traps.manipulated, state(few_traps.manipulated), fit, test)
    assert attacked is not None and attacked.layer == "fc1"
    assert attacked.share(30.0) == 1.0 and attacked.median > 60.0
    torch.manual_seed(0)
    fresh = build_model("convnet", local.image_shape, 10, width=1000)
    honest = image_readout(fresh, state(fresh), fit, test)
    assert honest is not None and honest.share(30.0) == 0.0 and honest.median < 20.0
    mlp = build_model("mlp", local.image_shape, 10)
    assert image_readout(mlp, state(mlp), fit, test) is None  # fc1 reads the image itself


def test_few_trap_rows_behind_a_pass_through_are_flagged_with_the_images_at_stake(
    few_traps, digits
):
    _, local, _ = digits
    assert few_traps.match.leaked(30.0) >= 4  # the attack's own decoder reconstructs
    v = Guard(GuardConfig(), template=copy.deepcopy(few_traps.honest), data=local).check(
        state(few_traps.manipulated)
    )
    assert v.malicious
    assert any(f.check == "exposure.readout" and f.flagged for f in v.findings)
    exposure = v.metadata["exposure"]
    assert exposure["exposed"] >= few_traps.match.leaked(30.0)
    assert exposure["readout_db"] >= 30.0
    assert "images at >= 30 dB" in exposure["sentence"]


def test_honest_convnets_are_not_flagged_by_the_readout(honest, digits):
    train, local, _ = digits
    torch.manual_seed(1)
    fresh = build_model("convnet", train.image_shape, 10, width=64)
    for m in (honest["convnet"], fresh):
        v = Guard(GuardConfig(), template=copy.deepcopy(fresh), data=local).check(state(m))
        assert not v.malicious, v.summary()
        # gated: the readout runs only near the lone-unit bar, which honest rows stay under
        read = next((f for f in v.findings if f.check == "exposure.readout"), None)
        assert read is None or (not read.flagged and read.value < 10.0)
