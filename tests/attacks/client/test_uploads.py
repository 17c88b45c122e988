import pytest
import torch

from gradguard.attacks.client.uploads import OUTLIER_SCALE, craft_upload
from gradguard.errors import GradguardError
from gradguard.fl.update import Update


def _update():
    return Update({"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}, 8, 3, 0.1)


def test_honest_upload_is_the_update_itself():
    u = _update()
    assert craft_upload("honest", u) is u


def test_flip_keeps_the_norm_and_reverses_the_direction():
    u = _update()
    sent = craft_upload("flip", u)
    assert torch.allclose(sent.flat(), -u.flat())
    assert sent.num_examples == u.num_examples


def test_outlier_is_a_scaled_sign_flip():
    u = _update()
    assert torch.allclose(craft_upload("outlier", u).flat(), -OUTLIER_SCALE * u.flat())


def test_unknown_upload_is_refused():
    with pytest.raises(GradguardError, match="unknown upload"):
        craft_upload("nope", _update())
