"""The leakage audit (detect/exposure.py) against working, disguised and honest models."""

import copy

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.attacks.inversion.analytic import invert_bins
from gradguard.attacks.inversion.labels import last_linear
from gradguard.detect import Guard, GuardConfig, get_detector
from gradguard.detect.base import Context
from gradguard.metrics import match
from gradguard.models import MLP


def trained_mlp(data, width):
    """An honest mlp after one epoch of plain SGD (batch 32, lr 0.05), as conftest's."""
    torch.manual_seed(0)
    m = MLP(data.image_shape, data.num_classes, width=width)
    order = torch.randperm(len(data))
    for i in range(0, len(data), 32):
        idx = order[i : i + 32]
        loss = torch.nn.functional.cross_entropy(m(data.x[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads, strict=True):
                p.sub_(0.05 * g)
    return m.eval()


def audit(model, template, local, previous=None, **options):
    det = get_detector("exposure", **options)
    return det.inspect(model.state_dict(), Context(template, local, previous))


def fedsgd(model, x, y):
    model = copy.deepcopy(model).train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    names = [n for n, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))


@torch.no_grad()
def disguised_imprint(honest, aux, bins, seed=0):
    """Imprint on ``bins`` random rows of an honest trained fc1, with per-row noise (30% of
    the row's norm, on the pixels the auxiliary data leaves dark, so that no two rows are
    near-twins and the bins barely move), shuffled rows, honest-looking row norms and
    per-row scales on the fc2 columns.
    Returns the model and what the attacker keeps to decode (order, per-row scale)."""
    g = torch.Generator().manual_seed(seed)
    src, _ = get_attack("imprint", bins=bins).manipulate(
        type(honest)(aux.image_shape, 10, width=bins), aux
    )
    m = copy.deepcopy(honest)
    rows = torch.randperm(m.fc1.out_features, generator=g)[:bins]
    w, b = src.fc1.weight.clone(), src.fc1.bias.clone()
    dark = (aux.x.flatten(1).mean(0) < 0.01).float()
    noise = torch.randn(w.shape, generator=g) * dark
    w += 0.3 * w.norm(dim=1, keepdim=True) * noise / noise.norm(dim=1, keepdim=True)
    alpha = torch.empty(bins).uniform_(0.5, 2.0, generator=g)
    alpha *= float(honest.fc1.weight.norm(dim=1).mean() / w.norm(dim=1).mean())
    m.fc1.weight[rows], m.fc1.bias[rows] = w * alpha[:, None], b * alpha
    beta = torch.empty(bins).uniform_(0.5, 2.0, generator=g)
    m.fc2.weight[:, rows] = (m.fc2.weight[:, rows].abs().mean(1, keepdim=True) + 0.01) * beta
    m.fc2.bias.abs_()
    scale = torch.ones(m.fc1.out_features)
    scale[rows] = beta
    return m, rows[torch.argsort(-b)], scale


def test_published_imprint_is_flagged_with_its_exposure(honest, imprinted, digits):
    _, local, _ = digits
    v = audit(imprinted["mlp"], honest["mlp"], local)
    e = v.metadata["exposure"]
    assert v.malicious and e["tampered"] and e["layer"] == "fc1" and e["batch"] == 64
    assert e["structured_pairs"] >= 10 and e["exposed"] >= 20
    assert "of your 64 images at >= 30 dB" in v.summary()


def test_disguised_partial_imprint_leaks_passes_forensics_and_is_flagged(honest, digits):
    _, local, aux = digits
    bad, order, scale = disguised_imprint(honest["mlp"], aux, bins=32)
    x, y = local.x[:64], local.y[:64]
    g = fedsgd(bad, x, y)
    feats, _ = invert_bins(g["fc1.weight"] / scale[:, None], g["fc1.bias"] / scale, order, limit=64)
    leaked = match(x, feats.reshape(-1, *x.shape[1:])).leaked(30.0)
    assert leaked >= 4  # the attacker's own decoder still works
    ctx = Context(honest["mlp"], local)
    assert not get_detector("forensics").inspect(bad.state_dict(), ctx).malicious
    v = audit(bad, honest["mlp"], local)
    assert v.malicious and v.metadata["exposure"]["tampered"]
    assert any(f.check == "exposure.pairs" and f.flagged for f in v.findings)


def test_trap_rows_with_binomial_sign_counts_are_flagged_on_first_contact(digits):
    """Trap rows fire for one sample alone several times per sample (honest layers: under
    0.24 per sample at batch 64), so the lone-unit rate flags them with no previous model;
    against the model the client accepted last round, the rise flags them too."""
    _, local, aux = digits
    m = trained_mlp(digits[0], width=300)
    bad, _ = get_attack("curious", neurons=300).manipulate(m, aux)
    with torch.no_grad():  # flip the smallest entries until each row's sign count is binomial
        g = torch.Generator().manual_seed(0)
        for row in bad.fc1.weight:
            k = int(torch.binomial(torch.tensor(64.0), torch.tensor(0.5), generator=g)) - int(
                (row < 0).sum()
            )
            small = torch.argsort(row.abs())
            idx = small[row[small] > 0][:k] if k > 0 else small[row[small] < 0][:-k]
            row[idx] = -row[idx]
    assert not get_detector("forensics").inspect(bad.state_dict(), Context(m, local)).malicious
    first = audit(bad, m, local)
    assert first.malicious and first.metadata["exposure"]["exposed"] >= 32
    assert any(f.check.startswith("exposure.lone") and f.flagged for f in first.findings)
    honest_first = audit(m, m, local)
    assert not honest_first.malicious
    v = audit(bad, m, local, previous={k: t.detach() for k, t in m.state_dict().items()})
    assert v.malicious and v.metadata["exposure"]["rise"] >= 0.25


@pytest.mark.parametrize("factor", [0.0, 1e-2])
def test_class_fishing_is_flagged_as_silencing(honest, digits, factor):
    _, local, _ = digits
    bad = copy.deepcopy(honest["resnet"])
    _, head = last_linear(bad)
    with torch.no_grad():
        others = torch.arange(head.out_features) != 0
        head.weight[others] *= factor
        head.bias[others] = 1000.0
    v = audit(bad, honest["resnet"], local)
    assert v.malicious and any(f.check == "exposure.silencing" and f.flagged for f in v.findings)
    assert v.metadata["exposure"]["speakers"] < 16  # a few samples carry the whole update


@pytest.mark.parametrize("name", ["mlp", "convnet", "resnet", "vit"])
def test_honest_models_are_not_flagged(honest, digits, name):
    train, local, _ = digits
    from gradguard.models import build_model

    torch.manual_seed(1)
    norm = "batch" if name == "resnet" else None
    fresh = build_model("vit-tiny" if name == "vit" else name, train.image_shape, 10, norm=norm)
    for m in (honest[name], fresh):
        v = audit(m, m, local, previous=fresh.state_dict())
        assert not v.malicious, v.summary()
        assert not v.metadata["exposure"]["tampered"]


def test_own_exposure_is_reported_not_flagged_and_strict_abstains(honest, digits):
    _, local, _ = digits
    state = honest["mlp"].state_dict()
    default = Guard(template=honest["mlp"], data=local)
    v = default.check(state)
    e = v.metadata["exposure"]
    assert e["exposed"] > 0 and not e["tampered"]  # an honest mlp exposes some samples
    assert default.allows(v) and "not flagged as tampering" in v.summary()
    strict = Guard(GuardConfig(policy="strict"), template=honest["mlp"], data=local)
    s = strict.check(state)
    assert not strict.allows(s) and not s.metadata["exposure"]["tampered"]
    assert any(f.check == "exposure.own" and f.flagged for f in s.findings)
    lax = Guard(
        GuardConfig(policy="strict", thresholds={"exposure.strict_fraction": 0.9}),
        template=honest["mlp"],
        data=local,
    )
    assert lax.allows(lax.check(state))


def test_guard_names_the_exposure_after_a_cheaper_detector_flags(honest, imprinted, digits):
    _, local, aux = digits
    guard = Guard(template=honest["mlp"], data=local)
    v = guard.check(imprinted["mlp"].state_dict())
    assert v.detector == "guard[health,architecture,forensics,exposure]" and not guard.allows(v)
    assert v.summary().startswith("this round would expose ")
    assert v.metadata["exposure"]["exposed"] >= 20 and v.metadata["exposure"]["tampered"]
    # a model that does not fit the client's architecture is not audited after the flag
    arch, _ = get_attack("imprint-arch", bins=8).manipulate(honest["mlp"], aux)
    w = guard.check(arch.state_dict())
    assert w.detector == "guard[health,architecture]" and w.malicious
    assert "exposure" not in w.metadata


def test_head_collapse_separates_fishing_heads_from_honest_ones():
    """Fishing must silence wrong samples, so the centred head keeps few directions; an
    honest head keeps its C - 1 (measured: honest <= 0.17, adaptive fishing >= 0.52)."""
    from gradguard.attacks.server.fishing import ClassFishing, FeatureFishing
    from gradguard.bench.attack_round import run_attack
    from gradguard.detect.exposure import head_collapse

    for name, cls in (("fishing-class", ClassFishing), ("fishing-feature", FeatureFishing)):
        for opts in ({}, dict(cls.adaptive)):
            r = run_attack(name, "digits", "mlp", batch_size=16, iterations=1, **opts)
            assert head_collapse(r.manipulated.head.weight) >= 0.4, (name, opts)
            assert head_collapse(r.honest.head.weight) < 0.2


def test_lone_units_are_counted_per_batch_size_whatever_their_scale():
    """A unit live for one sample alone counts however small its gradient (an attacker may
    shrink a trap row's downstream weights); a sample counts at most 4 times; the rate is
    read at every batch size the probe holds."""
    from gradguard.detect.exposure import lone_rates

    g = torch.zeros(64, 10)
    g[3, 0] = 1e-12  # lone for sample 3, tiny
    g[5, 1:7] = 1.0  # six lone units on sample 5: counted 4 times
    g[:, 7] = 1.0  # live for every sample: never lone
    g[20, 8], g[40, 8] = 1.0, 1.0  # lone in each batch of 16 and 32, not in 64
    rates = lone_rates(g)
    assert rates[64] == (1 + 4) / 64
    assert rates[32] == (1 + 4 + 1 + 1) / 64
    assert rates[16] == (1 + 4 + 1 + 1) / 64


@pytest.mark.parametrize("n", [16, 50, 64, 100])
def test_lone_rates_count_each_sub_batch_directly(n):
    """The rate at each batch size is the mean, over the probe's consecutive sub-batches of
    that size, of each sample's units live for it alone (at most 4 per sample)."""
    from gradguard.detect.exposure import LONE_CAP, lone_rates

    g = torch.randn(n, 40, generator=torch.Generator().manual_seed(n))
    g *= torch.rand(n, 40, generator=torch.Generator().manual_seed(n + 1)) < 0.04
    live = g.abs() > 1e-7 * g.abs().amax(0)
    rates = lone_rates(g)
    assert sorted(rates) == [s for s in (16, 32, 64) if n >= s]
    for size, rate in rates.items():
        count = 0
        for part in range(n // size):
            block = live[part * size : (part + 1) * size]
            alone = block.sum(0) == 1
            count += int((block & alone).sum(1).clamp(max=LONE_CAP).sum())
        assert rate == count / (n // size * size)
