"""The guarded client's cover under secure aggregation (gradguard.fl.cover)."""

import pytest
import torch

from gradguard.errors import GradguardError
from gradguard.fl.cover import SecureRefusal, cover_update
from gradguard.fl.update import Update


def test_cover_is_fresh_zero_mean_noise_at_the_honest_update_scale():
    honest = Update({"w": torch.full((200, 50), 0.01), "b": torch.zeros(3)}, 16, 1, 0.1, "delta")
    a = cover_update(honest, scale=2.0).as_delta()
    b = cover_update(honest, scale=2.0).as_delta()
    assert a["w"].pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=0.05)
    assert abs(a["w"].mean().item()) < 0.002  # zero mean, not the honest delta
    assert not torch.equal(a["w"], b["w"])  # drawn afresh every time (no differencing)
    assert torch.equal(a["b"], torch.zeros(3))  # a tensor the client never moves stays put
    assert cover_update(honest).num_examples == 16  # weighted like an honest reply


def test_refusal_settings_are_checked():
    with pytest.raises(GradguardError, match="refusal mode"):
        SecureRefusal(mode="ignore")
    with pytest.raises(GradguardError, match="scale"):
        SecureRefusal(scale=0.0)
