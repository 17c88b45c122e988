import copy

import pytest
import torch

from gradguard.detect import Guard
from gradguard.detect.base import Context
from gradguard.detect.scale import LayerScale
from gradguard.experiments.secagg_hazard import HazardConfig, inprocess_case, prepare


def hazard(gain: float = 1.0, disguise: str = "fc2"):
    """The hazard's round (digits, mlp, batch 16, FedSGD at lr 2): the target (client 0)
    gets the honest model with ``gain`` applied by ``disguise``; the others cover at scale 1."""
    return prepare(HazardConfig(lr=2.0, amplify=gain, disguise=disguise, honest_target=True))


def leaked(r) -> int:
    """The target's images the per-row decoder returns at >= 30 dB from the secure sum."""
    return inprocess_case(r, "cover", seed=1)["target_leaked"]


def test_honest_models_of_every_family_are_not_flagged(honest):
    for name, model in honest.items():
        v = LayerScale().inspect(model.state_dict(), Context(model))
        assert not v.malicious and v.verified, (name, v.summary())


def test_covers_hide_the_honest_target_until_the_server_amplifies_it():
    assert leaked(hazard()) == 0
    r = hazard(1000.0)
    assert leaked(r) >= 4  # measured: 8 of 16
    v = Guard(template=copy.deepcopy(r.template), data=r.batches[0]).check(r.sent[0].state_dict())
    assert v.malicious and v.verified
    assert "scale.grown on fc2.weight" in v.summary()
    assert "not flagged as tampering" not in v.summary()  # the audit's bracket is dropped


@pytest.mark.parametrize("disguise", ["spread", "head", "shrink-fc1"])
def test_a_gain_spread_over_layers_or_hidden_by_a_rescale_is_flagged(disguise):
    r = hazard(1000.0, disguise)
    assert leaked(r) >= 4  # measured: 7, 8, 7 of 16
    v = LayerScale().inspect(r.sent[0].state_dict(), Context(r.template))
    assert v.malicious and v.verified
    if disguise == "shrink-fc1":  # the same function: fc1 shrunk by the gain
        assert any(f.check == "scale.shrunk" and f.flagged for f in v.findings)


def test_a_convolution_shrunk_before_batch_norm_is_flagged(honest):
    model = copy.deepcopy(honest["resnet"])
    with torch.no_grad():
        model.stem.conv.weight.div_(100)  # batch norm undoes it; its gradient x100
    v = LayerScale().inspect(model.state_dict(), Context(honest["resnet"]))
    assert v.malicious and v.findings[1].layer == "stem.conv.weight"


def test_wrong_shapes_and_non_finite_weights_cannot_be_verified(honest):
    model = honest["mlp"]
    state = dict(model.state_dict(), **{"fc1.weight": torch.zeros(3, 3)})
    assert not LayerScale().inspect(state, Context(model)).verified
    state = dict(model.state_dict())
    state["fc2.weight"] = state["fc2.weight"].clone()
    state["fc2.weight"][0, 0] = float("inf")
    v = LayerScale().inspect(state, Context(model))
    assert v.malicious and not v.verified


def test_growth_straight_into_a_normalisation_is_not_counted_elsewhere_it_is(honest):
    resnet, vit = honest["resnet"], honest["vit"]
    model = copy.deepcopy(resnet)
    with torch.no_grad():
        model.stem.conv.weight.mul_(100)  # batch norm divides it out (and its gradient by 100)
    assert not LayerScale().inspect(model.state_dict(), Context(resnet)).malicious
    model = copy.deepcopy(vit)
    with torch.no_grad():
        model.blocks[3].mlp.fc2.weight.mul_(100)  # added to the residual stream: a gain
    v = LayerScale().inspect(model.state_dict(), Context(vit))
    assert v.malicious and v.findings[0].layer == "blocks.3.mlp.fc2.weight"
