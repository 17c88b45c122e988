"""The architecture check: an inserted imprint block is flagged; averaged integer buffers are
counts, not a changed architecture."""

import torch
from torch import nn

from gradguard.attacks import get_attack
from gradguard.detect import Guard, GuardConfig, get_detector
from gradguard.detect.architecture import restore_integers
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


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).relu().flatten(1))


def averaged(state, count):
    """What stock FedAvg sends: every array averaged, the count as float64."""
    out = {k: v.clone() for k, v in state.items()}
    out["bn.num_batches_tracked"] = torch.tensor(count, dtype=torch.float64)
    return out


def test_averaged_count_is_cast_back_and_accepted():
    model = BatchNormNet()
    guard = Guard(GuardConfig(detectors=("architecture", "forensics")), template=model)
    v = guard.check(averaged(model.state_dict(), 12.6666666))
    assert not v.malicious and v.verified and guard.allows(v)
    state, findings = restore_integers(averaged(model.state_dict(), 12.6666666), model.state_dict())
    assert state["bn.num_batches_tracked"].dtype == torch.int64
    assert int(state["bn.num_batches_tracked"]) == 13
    assert [f.flagged for f in findings] == [False]


def test_counts_no_averaging_produces_cannot_be_verified():
    model = BatchNormNet()
    guard = Guard(GuardConfig(detectors=("architecture",)), template=model)
    for bad in (-3.0, float("nan"), float("inf"), 2.0**60):
        v = guard.check(averaged(model.state_dict(), bad))
        assert v.malicious and not v.verified and not guard.allows(v), bad
    # a float where the template has a float of another shape stays a changed architecture
    state = model.state_dict()
    state["bn.num_batches_tracked"] = torch.zeros(3, dtype=torch.float64)
    v = guard.check(state)
    assert v.malicious and any(f.check == "architecture.shape" for f in v.findings)
