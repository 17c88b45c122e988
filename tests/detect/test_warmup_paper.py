"""Both readings of seed 000's warm-up detector against honest models and a working fishing
attack, and the last linear layer's mean (section 5.2; docs/experiments.md)."""

import copy

import torch
from torch.nn import functional as F

from gradguard.attacks import get_attack
from gradguard.detect import Context, get_detector
from gradguard.detect.warmup import WarmUp


def verdict(name, state, template, local, **options):
    return get_detector(name, **options).inspect(state, Context(template, local))


def test_plain_sgd_leaves_the_last_layer_mean_at_rounding_level(honest, digits):
    """dL/dlogits sums to zero over classes, so the head's weight and bias means cannot move."""
    _, local, _ = digits
    m = honest["mlp"]
    v = verdict("warmup", m.state_dict(), m, local, samples=32)
    ulp = torch.finfo(torch.float32).eps
    for key in ("linear[-1]_weight", "linear[-1]_bias"):
        s = v.metadata["stats"][key]
        scale = max(s["maxabs"])
        mean_moves = max(abs(a - s["mean"][0]) for a in s["mean"])
        std_moves = max(abs(a - s["std"][0]) for a in s["std"])
        assert mean_moves < 4 * ulp * scale  # float32 rounding of the update
        assert std_moves > 100 * ulp * scale  # while the layer itself does move
    # warmup-paper does not score it (under both aliases when the head is the only linear)
    v = verdict("warmup-paper", honest["resnet"].state_dict(), honest["resnet"], local, samples=32)
    assert {"linear[-1]_weight.mean", "linear[-1]_bias.mean", "linear[0]_bias.mean"} <= set(
        v.metadata["unscored"]
    )
    assert all("mean" not in f.layer or "linear" not in f.layer for f in v.findings)
    assert WarmUp.unscored(honest["convnet"]) == {
        ("linear[-1]_weight", "mean"),
        ("linear[-1]_bias", "mean"),
    }


def test_both_readings_pass_honest_trained_models(honest, digits):
    _, local, _ = digits
    for name in ("mlp", "convnet", "resnet", "vit"):
        m = honest[name]
        for det in ("warmup", "warmup-paper"):
            v = verdict(det, m.state_dict(), m, local)
            assert v.verified and not v.malicious, (name, det, v.score)


def test_warmup_paper_is_near_zero_on_a_benign_model(honest, digits):
    """Section 5.3: benign Z-scores stay close to zero; the literal reading's step 1 does not."""
    _, local, _ = digits
    m = honest["resnet"]
    paper = verdict("warmup-paper", m.state_dict(), m, local).metadata["max_z"]
    literal = verdict("warmup", m.state_dict(), m, local).metadata["max_z"]
    assert paper < 10 and literal > 1e4


def test_class_fishing_is_working_and_passes_both_readings(honest, digits):
    """Textbook class fishing (Wen et al.) on the honest mlp: it isolates the target class in
    the body's gradient (the leak), yet neither warm-up reading flags it at its calibrated
    threshold: the head's update is bounded by |p - y| <= 1 per sample, as an honest one."""
    train, local, aux = digits
    m = honest["mlp"]
    fished, secrets = get_attack("fishing-class", target_class=3).manipulate(copy.deepcopy(m), aux)
    fished.train()
    first = next(p for n, p in fished.named_parameters() if n.endswith("weight"))

    def body_grad(mask):
        loss = F.cross_entropy(fished(train.x[:64][mask]), train.y[:64][mask], reduction="sum")
        return torch.autograd.grad(loss, first)[0].norm()

    target = train.y[:64] == 3
    assert body_grad(~target) < 1e-3 * body_grad(target)  # only class 3 speaks
    for det in ("warmup", "warmup-paper"):
        v = verdict(det, fished.state_dict(), m, local)
        assert v.verified and not v.malicious, (det, v.score)


def test_feature_fishing_scores_higher_under_warmup_paper_than_honest(honest, digits):
    """At the broad-corpus threshold (2 x 182) neither reading flags feature fishing on this
    convnet; the paper's reading still scores it far above the honest model."""
    _, local, aux = digits
    m = honest["convnet"]
    fished, _ = get_attack("fishing-feature").manipulate(copy.deepcopy(m), aux)
    fished_score = verdict("warmup-paper", fished.state_dict(), m, local).score
    assert fished_score > 5 * verdict("warmup-paper", m.state_dict(), m, local).score
    assert not verdict("warmup", fished.state_dict(), m, local).malicious


def test_warmup_paper_flags_parameter_only_imprint_the_literal_reading_does_not(
    honest, imprinted, digits
):
    _, local, aux = digits
    for name in ("mlp", "convnet"):
        assert verdict("warmup-paper", imprinted[name].state_dict(), honest[name], local).malicious
        assert not verdict("warmup", imprinted[name].state_dict(), honest[name], local).malicious
    # a changed architecture cannot be warmed up: unverifiable (the Guard fails closed)
    bad, _ = get_attack("imprint-arch", bins=8).manipulate(honest["resnet"], aux)
    assert not verdict("warmup-paper", bad.state_dict(), honest["resnet"], local).verified
