"""PSNR, SSIM, Hungarian matching, leaked fraction and accuracy on known cases."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradguard.metrics import PSNR_CAP, accuracy, leaked_fraction, match, psnr, ssim


def test_psnr_known_values():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    p = psnr(a, b)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4) and p[1].item() == PSNR_CAP


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(3))
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, noisy) < 0.8).all()
    small = torch.rand(2, 1, 8, 8, generator=g)  # digits-sized: the window shrinks to fit
    assert torch.allclose(ssim(small, small), torch.ones(2))


def test_hungarian_match_recovers_a_permutation():
    g = torch.Generator().manual_seed(1)
    true = torch.rand(6, 1, 8, 8, generator=g)
    perm = torch.tensor([3, 0, 5, 1, 4])
    recon = true[perm] + 0.01 * torch.randn(5, 1, 8, 8, generator=g)
    m = match(true, recon)
    assert dict(zip(m.recon_index.tolist(), m.true_index.tolist(), strict=True)) == dict(
        enumerate(perm.tolist())
    )
    assert (m.psnr > 35).all() and (m.ssim > 0.9).all()
    assert m.leaked(30.0) == 5
    assert leaked_fraction(true, recon, 30.0) == pytest.approx(5 / 6)
    assert leaked_fraction(true, torch.rand(4, 1, 8, 8, generator=g), 30.0) == 0
    assert match(true, torch.zeros(0, 1, 8, 8)).leaked() == 0


def test_match_maximises_total_psnr_not_greedy():
    true = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.5)])
    recon = torch.stack([torch.full((1, 2, 2), v) for v in (0.3, 0.55)])
    m = match(true, recon)
    pairs = dict(zip(m.recon_index.tolist(), m.true_index.tolist(), strict=True))
    assert pairs == {0: 0, 1: 1}
    assert np.isclose(m.psnr.sum(), 10 * math.log10(1 / 0.09) + 10 * math.log10(1 / 0.0025))
    assert np.allclose(ssim(true, true).numpy(), 1.0)  # 2 x 2 images: one global window


def test_accuracy_restores_mode():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])
    model.train()
    assert accuracy(model, x, y, batch_size=3) == 0.75 and model.training
