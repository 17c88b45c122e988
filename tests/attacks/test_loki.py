"""LOKI (Zhao et al., S&P 2024): per-client channel blocks keep every client's imprint rows
apart inside the secure sum, so each client's images come back from the aggregate alone."""

import copy

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.bench.attack_round import run_attack
from gradguard.data import train_test
from gradguard.detect.guard import Guard
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model


@pytest.mark.parametrize(("local_steps", "floor"), [(1, 0.6), (4, 0.4)])
def test_every_clients_images_come_back_from_the_secure_sum(local_steps, floor):
    r = run_attack("loki", "digits", "convnet", batch_size=16, local_steps=local_steps, clients=3)
    assert r.aggregate is not None  # read from gradguard's masked secure sum
    assert r.leaked_fraction >= floor, r.summary()
    assert all(leak.leaked >= 3 for leak in r.leaks), r.summary()  # from every client


def _round():
    train, aux = train_test("digits")
    attack = get_attack("loki", clients=3, batch_size=8)
    torch.manual_seed(0)
    honest = build_model(
        "convnet", train.image_shape, train.num_classes, **attack.model_kwargs("convnet")
    )
    models, secrets = attack.manipulate_clients(copy.deepcopy(honest), aux, [0, 1, 2])
    return train, attack, honest, models, secrets


def test_a_clients_update_touches_only_its_own_rows():
    train, _, _, models, secrets = _round()
    for c, model in models.items():
        assert (
            model.conv1.weight[c].any()
            and not model.conv1.weight[[o for o in range(3) if o != c]].any()
        )
        update = local_update(
            model,
            train.subset(torch.arange(8 * c, 8 * c + 8)),
            LocalTraining(batch_size=4, lr=0.05, steps=2),
        )
        db = update.as_delta()["fc1.bias"]
        for other in range(3):
            assert (
                db[secrets.rows[other]].abs().max().item() > 0
                if other == c
                else db[secrets.rows[other]].abs().max().item() == 0
            )


def test_refuses_more_clients_than_blocks_and_other_models():
    train, aux = train_test("digits")
    attack = get_attack("loki", clients=2, batch_size=8)
    model = build_model(
        "convnet", train.image_shape, train.num_classes, **attack.model_kwargs("convnet")
    )
    with pytest.raises(GradguardError, match="client blocks"):
        attack.manipulate_clients(model, aux, [0, 1, 2])
    with pytest.raises(GradguardError, match="convnet"):
        attack.manipulate_clients(build_model("mlp", train.image_shape, 10), aux, [0, 1])


def test_every_client_sees_the_attack_with_the_default_guard():
    train, _, honest, models, _ = _round()
    for c, model in models.items():
        guard = Guard(template=honest, data=train.subset(torch.arange(8 * c, 8 * c + 8)))
        verdict = guard.check(model.state_dict())
        assert verdict.malicious and not guard.allows(verdict), verdict.summary()


def test_fashion_mnist_under_fedavg_with_eight_local_steps():
    # the default scales, chosen on the server's auxiliary data (docs/secagg.md)
    r = run_attack("loki", "fashion-mnist", "convnet", batch_size=16, local_steps=8, clients=4)
    assert r.leaked_fraction >= 0.85, r.summary()  # 98.4% measured
    assert all(leak.leaked >= 12 for leak in r.leaks), r.summary()
