"""The architecture check against an inserted imprint block."""

from gradguard.attacks import get_attack
from gradguard.detect import get_detector
from gradguard.detect.base import Context


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


def test_architecture_flags_imprint_block(honest, digits):
    _, local, aux = digits
    bad, _ = get_attack("imprint-arch", bins=8).manipulate(honest["resnet"], aux)
    v = verdict("architecture", bad, honest["resnet"], local)
    assert v.malicious and any(f.check == "architecture.extra" for f in v.findings)
    # data-based detectors cannot run on it: they fail closed instead of crashing
    assert not verdict("warmup", bad, honest["resnet"], local).verified
