"""warmup+ (gradguard's light warm-up variant): flags imprint, reads the previous model only when
asked, and handles models whose biases arrive constant (zero-initialised, Keras's default)."""

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


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


def test_warmup_plus_flags_imprint_faithful_does_not(honest, imprinted, digits):
    _, local, _ = digits
    bad = imprinted["mlp"]
    assert verdict("warmup+", bad, honest["mlp"], local).malicious
    assert not verdict("warmup", bad, honest["mlp"], local).malicious


def test_warmup_plus_is_light_and_reads_the_previous_model_only_when_asked(honest, digits):
    _, local, _ = digits
    det = get_detector("warmup+")
    assert (det.steps, det.samples, det.use_previous) == (1, 32, False)  # the Guard's budget
    m = honest["convnet"]
    ctx = Context(m, local, previous=m.state_dict())
    v = det.inspect(m.state_dict(), ctx)
    assert not v.malicious and v.score < 1
    assert len(v.metadata["stats"]["linear[0]_weight"]["mean"]) == 2  # received, step 1
    v = get_detector("warmup+", use_previous=True).inspect(m.state_dict(), ctx)
    assert not v.malicious and v.score < 1
    assert len(v.metadata["stats"]["linear[0]_weight"]["mean"]) == 3  # previous, 0, 1
    assert len(v.metadata["z"]["conv[0]_weight"]["std"]) == 2  # arrival, step 1
