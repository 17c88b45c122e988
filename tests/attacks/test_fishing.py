"""Fishing (Wen et al. 2022) on digits: the fished gradient isolates the target class."""

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.inverting import invert
from gradguard.attacks.server.fishing import ClassFishing, FeatureFishing
from gradguard.data import train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.forensics import fishing as forensic_fishing
from gradguard.errors import GradguardError
from gradguard.fl.client import LocalTraining, local_update
from gradguard.metrics import match
from gradguard.models import build_model


@pytest.fixture(scope="module")
def setup():
    train, test = train_test("digits")
    torch.manual_seed(0)
    model = build_model("convnet", train.image_shape, train.num_classes)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    batch = train.subset(order[:32])
    return train, test, model, batch


def _fedsgd(model, data):
    return local_update(model, data, LocalTraining(batch_size=len(data), fedsgd=True))


def test_class_fishing_model_and_count(setup):
    _, test, model, batch = setup
    attack = get_attack("fishing-class", target_class=3)
    fished, secrets = attack.manipulate(model, test)
    w, b = fished.head.weight, fished.head.bias
    assert torch.equal(w[3], model.head.weight[3])
    assert float(w[torch.arange(10) != 3].abs().sum()) == 0 and float(b[0]) == attack.bias
    assert float(model.head.weight.abs().sum()) > 0  # the honest model is left untouched
    update = _fedsgd(fished, batch)
    # Below the head only the target class speaks: the gradient equals that of its samples.
    only = batch.subset(torch.nonzero(batch.y == 3).flatten())
    g_only = _fedsgd(fished, only).as_gradient()["conv1.weight"] * len(only) / len(batch)
    assert torch.allclose(update.as_gradient()["conv1.weight"], g_only, atol=1e-6)
    rec = get_attack("fishing-class", target_class=3, iterations=1).reconstruct(update, secrets)
    assert rec.info["target_count"] == len(only)


def test_class_fishing_beats_honest_inversion(setup):
    _, test, model, batch = setup
    attack = get_attack("fishing-class", target_class=3, images=1, iterations=120)
    fished, secrets = attack.manipulate(model, test)
    rec = attack.reconstruct(_fedsgd(fished, batch), secrets)
    fished_psnr = float(match(batch.x, rec.images).psnr.max())
    honest, _ = invert(
        model, _fedsgd(model, batch).as_gradient(), torch.tensor([3]), (1, 1, 8, 8), attack.config()
    )
    honest_psnr = float(match(batch.x, honest).psnr.max())
    assert fished_psnr >= 16.0 and fished_psnr > honest_psnr + 3


def _dsnr(model, batch) -> float:
    """D-SNR of conv1 (anchors): the largest per-sample gradient norm over the others'."""
    norms = []
    for i in range(len(batch)):
        model.zero_grad()
        F.cross_entropy(model(batch.x[i : i + 1]), batch.y[i : i + 1]).backward()
        norms.append(model.conv1.weight.grad.norm())
    n = torch.stack(norms)
    return float(n.max() / (n.sum() - n.max() + 1e-6))


def test_feature_fishing_gate_isolates_one_sample(setup):
    _, test, model, batch = setup
    attack = get_attack("fishing-feature", multiplier=16, batch_size=32, train_steps=60)
    fished, secrets = attack.manipulate(model, test)
    w, t, f = fished.head.weight, secrets["target_class"], secrets["feature"]
    assert int((w != 0).sum()) == 1 and float(w[t, f]) > 0
    assert float(fished.head.bias[t]) == pytest.approx(-float(w[t, f]) * secrets["threshold"])
    assert secrets["expected_other_speakers"] < 1.0
    weak = copy.deepcopy(fished)  # the same gate, multiplier 4 instead of 16
    with torch.no_grad():
        weak.head.weight.mul_(4 / 16)
        weak.head.bias.mul_(4 / 16)
    # One sample dominates the batch gradient, more so with the larger multiplier.
    strong_dsnr, weak_dsnr = _dsnr(fished, batch), _dsnr(weak, batch)
    assert strong_dsnr > 1.0 and strong_dsnr > 2 * weak_dsnr


def test_bad_target_is_one_clear_error(setup):
    _, test, model, _ = setup
    with pytest.raises(GradguardError, match="target class 12"):
        get_attack("fishing-class", target_class=12).manipulate(model, test)


# --- adaptive (white-box) disguises -------------------------------------------------------

DETECTORS = ("architecture", "forensics", "transmit-snr", "warmup+", "dsnr")


def _verdicts(model, fished, local) -> dict[str, bool]:
    """Each detector of the default Guard, and D-SNR, on ``fished``: flagged or not."""
    state = {k: v.detach() for k, v in fished.state_dict().items()}
    guard = Guard(GuardConfig(detectors=DETECTORS, stop_at_first=False), model, local)
    verdict = guard.check(state)
    assert verdict.verified
    return {name: v["malicious"] for name, v in verdict.metadata["detectors"].items()}


@pytest.mark.parametrize("klass", [ClassFishing, FeatureFishing])
def test_dials_start_at_the_textbook_value(klass):
    fields = {f.name: f.default for f in dataclasses.fields(klass)}
    for dial, values in klass.dials.items():
        assert values[0] == fields[dial], dial
    assert set(klass.adaptive) <= set(fields)


@pytest.fixture(scope="module")
def adaptive_class(setup):
    train, test, model, batch = setup
    attack = get_attack("fishing-class", target_class=0, **ClassFishing.adaptive)
    fished, secrets = attack.manipulate(model, test)
    return fished, secrets


def test_adaptive_class_fishing_is_flagged_on_the_centred_head(setup, adaptive_class):
    # The common row hides the zeroed rows and inflates the raw row norms, but not the
    # rows less their mean (what the softmax sees): the bias stands out there.
    train, _, model, _ = setup
    fished, _ = adaptive_class
    assert forensic_fishing.zero_rows(fished.head.weight) == 0
    assert forensic_fishing.bias_extremity(fished.head.weight, fished.head.bias) > 20
    verdicts = _verdicts(model, fished, train.subset(torch.arange(1000)))
    assert verdicts["forensics"]


def test_adaptive_class_fishing_still_isolates_the_target_class(setup, adaptive_class):
    _, _, model, batch = setup
    fished, secrets = adaptive_class
    only = batch.subset(torch.nonzero(batch.y == 0).flatten())

    def cosine_with_target_only(m) -> float:
        g = _fedsgd(m, batch).as_gradient()["conv1.weight"]
        g_only = _fedsgd(m, only).as_gradient()["conv1.weight"]
        return float(F.cosine_similarity(g.flatten(), g_only.flatten(), dim=0))

    assert cosine_with_target_only(fished) > 0.8 > cosine_with_target_only(model) + 0.5
    attack = get_attack("fishing-class", images=1, iterations=120, **ClassFishing.adaptive)
    rec = attack.reconstruct(_fedsgd(fished, batch), secrets)
    assert rec.info["target_count"] == len(only)
    fished_psnr = float(match(batch.x, rec.images).psnr.max())
    honest, _ = invert(
        model, _fedsgd(model, batch).as_gradient(), torch.tensor([0]), (1, 1, 8, 8), attack.config()
    )
    assert fished_psnr >= 16.0 and fished_psnr > float(match(batch.x, honest).psnr.max()) + 5


def test_adaptive_feature_fishing_isolates_and_passes(setup):
    train, test, model, batch = setup
    options = {**FeatureFishing.adaptive, "batch_size": 32, "train_steps": 60, "iterations": 120}
    attack = get_attack("fishing-feature", **options)
    fished, secrets = attack.manipulate(model, test)
    assert forensic_fishing.zero_rows(fished.head.weight) == 0
    assert not any(_verdicts(model, fished, train.subset(torch.arange(1000))).values())
    # One target sample's gradient dominates every non-target sample's.
    norms = []
    for i in range(len(batch)):
        fished.zero_grad()
        F.cross_entropy(fished(batch.x[i : i + 1]), batch.y[i : i + 1]).backward()
        norms.append(float(fished.fc1.weight.grad.norm()))
    norms = torch.tensor(norms)
    is_t = batch.y == secrets["target_class"]
    assert bool(is_t[norms.argmax()]) and float(norms[~is_t].max()) < 0.25 * float(norms.max())
    rec = attack.reconstruct(_fedsgd(fished, batch), secrets)
    base = secrets["base_model"]
    honest, _ = invert(
        base,
        _fedsgd(base, batch).as_gradient(),
        torch.tensor([secrets["target_class"]]),
        (1, 1, 8, 8),
        attack.config(),
    )
    fished_psnr = float(match(batch.x, rec.images).psnr.max())
    assert fished_psnr >= 16.0 and fished_psnr > float(match(batch.x, honest).psnr.max()) + 5
