"""A convnet's fc1 input goes back to the image, and the honest update gives images away."""

from __future__ import annotations

import torch

from gradguard.attacks.inversion.feature_inversion import gauss_newton, rows_exposure
from gradguard.data import train_test
from gradguard.detect.readout import _features
from gradguard.metrics import match
from gradguard.models import build_model


def _digits(n: int, seed: int = 0):
    train = train_test("digits", limit=300, seed=seed)[0]
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return train.x[idx], train.y[idx], train.x.mean(0)


def test_an_honest_convnets_fc1_input_inverts_to_the_image():
    x, _, start = _digits(4)
    torch.manual_seed(0)
    model = build_model("convnet", tuple(x.shape[1:]), 10, width=64)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        target = _features(model, state, "fc1", x)
    images = gauss_newton(model, state, "fc1", target, start)
    assert images.shape == x.shape
    assert (match(x, images).psnr >= 30.0).all()


def test_the_honest_convnet_update_exposes_images_through_the_convolutions():
    x, y, _ = _digits(16)
    torch.manual_seed(0)
    model = build_model("convnet", tuple(x.shape[1:]), 10, width=256)
    exposure = rows_exposure(model, x, y)
    assert exposure.batch == 16
    assert 0 < exposure.leaked <= 16
    assert exposure.inverted <= 16 <= exposure.candidates


def test_on_an_mlp_the_rows_are_the_images_and_nothing_is_inverted():
    x, y, _ = _digits(16)
    torch.manual_seed(0)
    model = build_model("mlp", tuple(x.shape[1:]), 10)
    exposure = rows_exposure(model, x, y)
    assert exposure.inverted == 0
    assert exposure.share <= 1.0
