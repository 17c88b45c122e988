"""D-SNR (seed 000, eq. 1) on an honest and a fished convnet, and on a mismatched state."""

import math

from gradguard.attacks import get_attack
from gradguard.detect import get_detector
from gradguard.detect.base import Context


def test_fishing_raises_dsnr_and_a_mismatched_state_is_unverifiable(honest, digits):
    _, local, aux = digits
    model = honest["convnet"]
    dsnr = get_detector("dsnr")
    clean = dsnr.inspect(model.state_dict(), Context(model, local))
    assert clean.verified and not clean.malicious and clean.score < 0.05
    fished, _ = get_attack("fishing-class").manipulate(model, aux)
    v = dsnr.inspect(fished.state_dict(), Context(model, local))
    # one sample dominates more, though not above the calibrated threshold (2.73) at the
    # default 32-sample batch (measured 0.106 against 0.019 honest)
    assert v.score > 3 * clean.score and v.findings[0].check == "dsnr"
    state = model.state_dict()
    state.pop(next(iter(state)))
    bad = dsnr.inspect(state, Context(model, local))
    assert not bad.verified and bad.malicious and math.isinf(bad.score)
    assert bad.findings[0].message.startswith("cannot verify: ")
