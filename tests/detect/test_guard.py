"""The Guard: policy abstain / warn, cheapest first, fails closed."""

import math

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.detect import Guard, GuardConfig

STATIC = ("architecture", "forensics", "transmit-snr")


def test_default_guard_is_cheap_and_leaves_out_the_warmups():
    assert GuardConfig().detectors == STATIC + ("scale", "exposure")


def test_guard_abstains_on_attack_and_allows_honest(honest, imprinted, digits):
    _, local, _ = digits
    guard = Guard(template=honest["mlp"], data=local)
    ok = guard.check(honest["mlp"].state_dict())
    assert not ok.malicious and guard.allows(ok)
    assert ok.detector == "guard[health,architecture,forensics,transmit-snr,scale,exposure]"
    v = guard.check(imprinted["mlp"].state_dict())
    assert v.malicious and not guard.allows(v)
    # stopped at the first decisive one; the exposure audit still says what is at stake
    assert v.detector == "guard[health,architecture,forensics,exposure]"
    assert "imprint" in v.summary()
    assert len(guard.history) == 2


def test_warn_policy_trains_on_flagged_but_never_on_unverifiable(honest):
    guard = Guard(GuardConfig(policy="warn", detectors=STATIC), template=honest["mlp"])
    bad = {k: v.clone() for k, v in honest["mlp"].state_dict().items()}
    bad["head.weight"][3:] = 0  # zeroed rows: flagged, verifiable
    assert guard.allows(guard.check(bad))
    bad["fc1.bias"][0] = math.nan
    v = guard.check(bad)
    assert v.malicious and not v.verified and not guard.allows(v)


def test_guard_fails_closed_on_garbage(honest):
    guard = Guard(template=honest["mlp"])
    for received in (
        None,
        {"fc1.weight": "x"},
        {"fc1.weight": torch.zeros(3)},
        {k: v[..., :1] for k, v in honest["mlp"].state_dict().items()},
    ):
        v = guard.check(received)
        assert v.malicious and not v.verified and not guard.allows(v)


def test_client_guard_callable(honest, digits):
    from gradguard.fl.guarded import ClientGuard

    _, local, aux = digits
    guard = Guard(GuardConfig(detectors=STATIC), template=honest["convnet"], data=local)
    fn = ClientGuard(guard)
    assert fn(honest["convnet"]) is True
    bad, _ = get_attack("fishing-class").manipulate(honest["convnet"], aux)
    assert fn(bad) is False
    assert [v.malicious for v in guard.history] == [False, True]


def test_guard_takes_a_dataloader_and_the_clients_loss(honest, digits):
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from gradguard.errors import DataError

    _, local, _ = digits
    calls = []

    def smoothed(logits, y):
        calls.append(len(y))
        return F.cross_entropy(logits, y, label_smoothing=0.1)

    loader = DataLoader(TensorDataset(local.x, local.y), batch_size=50)
    guard = Guard(template=honest["mlp"], data=loader, loss=smoothed)
    assert len(guard.data) == len(local)
    v = guard.check(honest["mlp"].state_dict())
    assert guard.allows(v) and calls  # the exposure audit took its gradient of this loss
    # data the model cannot take: an error now, not "cannot verify" at every round
    with pytest.raises(DataError, match="cannot be trained on the local data"):
        Guard(template=honest["mlp"], data=(torch.rand(8, 3, 32, 32), local.y[:8]))
    with pytest.raises(DataError, match="label 10 but the model has 10 outputs"):
        Guard(template=honest["mlp"], data=(local.x[:8], torch.full((8,), 10)))
