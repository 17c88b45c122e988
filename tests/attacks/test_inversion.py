"""Gradient inversion on digits (8x8): labels, Inverting Gradients, DLG, iDLG."""

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.inverting import invert
from gradguard.attacks.inversion.labels import idlg_label, label_counts, recover_labels
from gradguard.data import train_test
from gradguard.errors import GradguardError
from gradguard.fl.client import LocalTraining, local_update
from gradguard.metrics import match, psnr
from gradguard.models import build_model


@pytest.fixture(scope="module")
def digits():
    return train_test("digits")


def _fedsgd(model, data):
    return local_update(model, data, LocalTraining(batch_size=len(data), fedsgd=True))


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_idlg_label_is_exact(digits, arch):
    train, _ = digits
    model = build_model(arch, train.image_shape, train.num_classes)
    for i in range(10):
        one = train.subset([i])
        assert idlg_label(_fedsgd(model, one).as_gradient()) == int(one.y[0])


def test_label_counts_of_a_batch(digits):
    train, test = digits
    model = build_model("convnet", train.image_shape, train.num_classes)
    batch = train.subset(list(range(32)))
    grad = _fedsgd(model, batch).as_gradient()
    counts = label_counts(grad, 32, mean_probs=model(test.x[:256]).softmax(1).mean(0).detach())
    true = torch.bincount(batch.y, minlength=10)
    assert int(counts.sum()) == 32
    assert int((counts - true).abs().sum()) <= 4  # at most two samples misplaced
    assert len(recover_labels(grad, 32)) == 32


def test_inverting_gradients_recovers_one_digit(digits):
    train, test = digits
    torch.manual_seed(0)
    model = build_model("convnet", train.image_shape, train.num_classes)
    attack = get_attack("inverting-gradients", iterations=100)
    sent, secrets = attack.manipulate(model, test)
    assert sent is model  # passive
    one = train.subset([5])
    rec = attack.reconstruct(_fedsgd(sent, one), secrets)
    assert rec.images.shape == one.x.shape and int(rec.labels[0]) == int(one.y[0])
    got = float(psnr(rec.images, one.x)[0])
    baseline = float(psnr(torch.rand_like(one.x), one.x)[0])
    assert got >= 25.0 and got > baseline + 15


@pytest.mark.parametrize("name", ["dlg", "idlg"])
def test_dlg_and_idlg_recover_one_digit(digits, name):
    train, test = digits
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes)
    attack = get_attack(name, iterations=60)
    sent, secrets = attack.manipulate(model, test)
    one = train.subset([3])
    rec = attack.reconstruct(_fedsgd(sent, one), secrets)
    assert float(psnr(rec.images, one.x)[0]) >= 25.0
    assert int(rec.labels[0]) == int(one.y[0])


def test_small_batch_inversion_beats_random(digits):
    train, test = digits
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes)
    attack = get_attack("inverting-gradients", iterations=80)
    sent, secrets = attack.manipulate(model, test)
    batch = train.subset([0, 1])
    rec = attack.reconstruct(_fedsgd(sent, batch), secrets)
    assert sorted(rec.labels.tolist()) == sorted(batch.y.tolist())
    got = match(batch.x, rec.images).psnr.mean()
    base = match(batch.x, torch.rand_like(batch.x)).psnr.mean()
    assert got > base + 8


def test_invert_needs_labels(digits):
    train, _ = digits
    model = build_model("mlp", train.image_shape, train.num_classes)
    with pytest.raises(GradguardError):
        invert(model, {"nothing": torch.zeros(1)}, None, (1, 1, 8, 8))
