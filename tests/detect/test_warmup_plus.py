"""warmup+ on models whose biases arrive constant (zero-initialised, Keras's default)."""

import pytest
import torch

from gradguard.detect import get_detector
from gradguard.detect.base import Context
from gradguard.models import build_model


def fresh(name, shape, zero_bias):
    torch.manual_seed(0)
    m = build_model(name, shape, 10, width=100)
    if zero_bias:
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith("bias"):
                    p.zero_()
    return m


def inspect(model, template, local):
    return get_detector("warmup+").inspect(model.state_dict(), Context(template, local))


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_honest_fresh_model_with_zero_biases_is_not_flagged(digits, name):
    _, local, aux = digits
    zero, default = (fresh(name, aux.image_shape, z) for z in (True, False))
    zeroed, v = inspect(zero, zero, local), inspect(default, default, local)
    assert not zeroed.malicious and zeroed.score < 0.5, zeroed.summary()  # was |Z| > 1e5
    assert zeroed.metadata["max_z"] < 3 * v.metadata["max_z"]


def test_constant_weights_of_an_imprint_layer_are_still_flagged(honest, imprinted, digits):
    _, local, _ = digits
    v = inspect(imprinted["mlp"], honest["mlp"], local)
    assert v.malicious
    assert any(f.flagged and f.layer.startswith("linear[0]_weight") for f in v.findings)
