"""Transmit-SNR of the first convolution against imprint's identity kernels."""

from gradguard.detect import get_detector
from gradguard.detect.base import Context


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


def test_transmit_snr_flags_identity_convolutions_of_imprint(honest, imprinted, digits):
    _, local, _ = digits
    bad = imprinted["convnet"]
    v = verdict("transmit-snr", bad, honest["convnet"], local)
    assert v.malicious and v.findings[0].value > 1e5  # Dirac ~1e6 (anchors)
    assert not verdict("transmit-snr", honest["convnet"], honest["convnet"], local).malicious
