"""Model inconsistency (Pasquini et al., CCS 2022): the non-targets' updates vanish but for
the output bias, so the secure sum is the target's update and its images come back."""

import copy

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.attacks.server.inconsistency import zero_last_layers
from gradguard.data import train_test
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model


@pytest.mark.parametrize(
    "training",
    [
        LocalTraining(batch_size=16, lr=0.05, fedsgd=True),
        LocalTraining(batch_size=4, lr=0.05, steps=4),
    ],
)
def test_zeroed_layers_silence_every_entry_but_the_output_bias(training):
    train, _ = train_test("digits")
    for name in ("mlp", "convnet"):
        model = zero_last_layers(build_model(name, train.image_shape, train.num_classes), 2)
        update = local_update(model, train.subset(torch.arange(16)), training)
        delta = update.as_delta()
        moved = {k for k, v in delta.items() if v.abs().max() > 0}
        assert moved == {"head.bias"}, (name, moved)


def test_target_gets_the_inner_attack_and_refusals():
    train, aux = train_test("digits")
    model = build_model("mlp", train.image_shape, train.num_classes)
    attack = get_attack("inconsistency", target=2, bins=256)
    models, secrets = attack.manipulate_clients(copy.deepcopy(model), aux, [0, 1, 2])
    assert secrets.target == 2 and models[0] is models[1]
    assert not models[0].head.weight.any() and models[2].head.weight.any()
    with pytest.raises(GradguardError, match="not among"):
        attack.manipulate_clients(model, aux, [0, 1])
    arch = get_attack("inconsistency", inner="imprint-arch", bins=8)
    with pytest.raises(GradguardError, match="changes the architecture"):
        arch.manipulate_clients(model, aux, [0, 1])
    with pytest.raises(GradguardError, match="cannot be inconsistency"):
        get_attack("inconsistency", inner="inconsistency")


def test_imprint_scale_shrinks_the_targets_rows_and_its_images_still_come_back():
    from gradguard.bench.attack_round import run_attack

    small = run_attack(
        "inconsistency", "digits", "mlp", batch_size=16, clients=2, imprint_scale=0.01
    )
    full = run_attack("inconsistency", "digits", "mlp", batch_size=16, clients=2)
    ratio = float(small.manipulated.fc1.bias.abs().max() / full.manipulated.fc1.bias.abs().max())
    assert ratio == pytest.approx(0.01, rel=1e-3)  # SecAgg+'s clipping range shrinks with it
    assert small.leaks[0].leaked >= 14, small.summary()  # the target's 16 of 16 measured
