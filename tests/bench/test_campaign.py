"""The campaign, engine-free: who is attacked, which model each client gets, what the
server recovers from per-client updates or from the round's sum."""

import copy

import torch

from gradguard.attacks import get_attack
from gradguard.bench.campaign import Campaign
from gradguard.data import train_test
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model


def _setup():
    train, aux = train_test("digits")
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes, width=256)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = {c: train.subset(order[c * 16 : (c + 1) * 16]) for c in range(3)}
    return model, aux, batches


def _updates(models, batches):
    training = LocalTraining(batch_size=16, lr=0.05, fedsgd=True)
    return {
        c: local_update(models[c], batches[c], training, torch.Generator().manual_seed(c), c)
        for c in models
    }


def test_the_targeting_rule():
    campaign = Campaign(get_attack("imprint"), rounds=(2, 4), targets=(1,))
    assert campaign.targeted(2, range(3)) == [1]
    assert campaign.targeted(3, range(3)) == []
    assert Campaign(get_attack("imprint"), rounds=(2,)).targeted(2, range(3)) == [0, 1, 2]


def test_one_model_attack_reads_each_targeted_update():
    model, aux, batches = _setup()
    truth = {c: b.x for c, b in batches.items()}
    campaign = Campaign(get_attack("imprint"), (1,), (0, 2), aux, truth)
    models = campaign.models_for(1, model, [0, 1, 2])
    assert sorted(models) == [0, 2] and models[0] is models[2]
    assert not torch.equal(models[0].fc1.weight, model.fc1.weight)  # manipulated
    everyone = {**models, 1: model}
    leaks = campaign.recover(1, updates=_updates(everyone, batches))
    assert sorted(k.client_id for k in leaks) == [0, 2]
    assert all(k.leaked >= 8 and k.images == 16 for k in leaks)
    assert campaign.leaked(1) == sum(k.leaked for k in leaks)


def test_per_client_attack_reads_the_target_from_the_sum():
    model, aux, batches = _setup()
    truth = {c: b.x for c, b in batches.items()}
    campaign = Campaign(get_attack("inconsistency", target=1), (1,), None, aux, truth)
    honest = copy.deepcopy(model)
    models = campaign.models_for(1, model, [0, 1, 2])
    assert not torch.equal(models[1].fc1.weight, honest.fc1.weight)
    for c in (0, 2):  # the others: the last two layers zero, the rest the global model's
        assert not models[c].head.weight.any() and not models[c].fc2.weight.any()
        assert torch.equal(models[c].fc1.weight, honest.fc1.weight)
    leaks = campaign.recover(1, updates=_updates(models, batches))
    assert [k.client_id for k in leaks] == [1]
    assert leaks[0].leaked >= 8
