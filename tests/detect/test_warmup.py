"""The faithful warm-up detector (seed 000, section 5) records every Z-score."""

from gradguard.detect import get_detector
from gradguard.detect.base import Context


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


def test_warmup_records_every_zscore(honest, digits):
    _, local, _ = digits
    # the faithful detector's 5 steps; 32 samples instead of 128 keep the test fast
    v = get_detector("warmup", samples=32).inspect(
        honest["resnet"].state_dict(), Context(honest["resnet"], local)
    )
    z = v.metadata["z"]
    assert {
        "conv[0]_weight",
        "linear[0]_weight",
        "linear[-1]_bias",
        "batchnorm[0]_activation",
        "batchnorm[2]_activation",
    } <= set(z)
    assert all(len(z[k]["mean"]) == 5 for k in z)  # 5 warm-up steps
    assert len(v.metadata["stats"]["conv[0]_weight"]["std"]) == 6  # step 0 = received
