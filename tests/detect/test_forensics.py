"""Static forensics against real manipulated models: imprint, fishing, Decepticons, trap weights."""

import copy

import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.attacks.server.fishing import ClassFishing, disguise
from gradguard.detect import get_detector
from gradguard.detect.base import Context
from gradguard.models import build_model


def verdict(detector, model, template, local):
    return get_detector(detector).inspect(model.state_dict(), Context(template, local))


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_forensics_flags_imprint_with_few_bins(honest, imprinted, digits, name):
    _, local, _ = digits
    bad = imprinted[name]
    v = verdict("forensics", bad, honest[name], local)
    assert v.malicious and v.verified
    assert any(
        f.check == "forensics.imprint" and f.layer == "fc1" and f.value >= 64 for f in v.findings
    )
    assert not verdict("architecture", bad, honest[name], local).malicious  # params only


@pytest.mark.parametrize(
    "attack,opts",
    [
        ("fishing-class", {"bias": 10.0}),
        ("fishing-feature", {"multiplier": 12.0, "train_steps": 0}),
    ],
)
def test_forensics_flags_fishing_at_mild_settings(honest, digits, attack, opts):
    _, local, aux = digits
    bad, _ = get_attack(attack, **opts).manipulate(honest["resnet"], aux)
    v = verdict("forensics", bad, honest["resnet"], local)
    assert v.malicious
    assert any(f.check == "forensics.zero-rows" and f.layer == "head" for f in v.findings)


def test_forensics_flags_decepticons_attention(honest, digits):
    # No Decepticons attack exists in gradguard.attacks yet: apply its published attention
    # modification (seed 000, eq. 19: W_q = 0, b_q ~ first position, W_k = I) by hand.
    import copy

    import torch

    _, local, _ = digits
    bad = copy.deepcopy(honest["vit"])
    with torch.no_grad():
        for blk in bad.blocks:
            blk.attn.q.weight.zero_()
            blk.attn.q.bias.copy_(bad.pos_embed[0, 0] * 10)
            blk.attn.k.weight.copy_(torch.eye(blk.attn.k.weight.shape[0]))
            blk.attn.k.bias.zero_()
    v = verdict("forensics", bad, honest["vit"], local)
    assert any(f.check == "forensics.attention" and f.flagged for f in v.findings)


@pytest.mark.parametrize("name", ["mlp", "convnet"])
@pytest.mark.parametrize("neurons", [100, 1000])
def test_forensics_flags_curious_trap_weights(digits, name, neurons):
    """Real trap-weight models (gradguard.attacks curious) against fresh honest ones."""
    import torch

    from gradguard.models import build_model

    _, local, aux = digits
    torch.manual_seed(neurons)
    m = build_model(name, aux.image_shape, 10, width=neurons)
    bad, _ = get_attack("curious", neurons=neurons).manipulate(m, aux)
    v = verdict("forensics", bad, m, local)
    trap = [f for f in v.findings if f.check == "forensics.trap" and f.layer == "fc1"]
    assert v.malicious and trap and trap[0].flagged and trap[0].value > 50
    honest = verdict("forensics", m, m, local)
    assert not honest.malicious and honest.score < 1


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_forensics_reads_the_head_through_what_the_softmax_sees(digits, name):
    """A common row and bias added to every head row change no gradient: an honest head
    with them passes, adaptive class fishing under them is flagged."""
    _, local, aux = digits
    torch.manual_seed(0)
    m = build_model(name, aux.image_shape, 10)
    shifted = copy.deepcopy(m)
    with torch.no_grad():
        disguise(shifted.head, m.head.weight, common_row=3.0, common_bias=5.0, seed=0)
    honest = verdict("forensics", shifted, m, local)
    assert not honest.malicious and honest.score < 0.2, honest.summary()
    for opts in (ClassFishing.adaptive, {**ClassFishing.adaptive, "common_bias": 1.0}):
        bad, _ = get_attack("fishing-class", **opts).manipulate(m, aux)
        v = verdict("forensics", bad, m, local)
        assert any(f.check == "forensics.bias" and f.flagged for f in v.findings), v.summary()
    # textbook zeroed rows, turned into equal rows by a common row, still count
    bad, _ = get_attack("fishing-class", bias=10.0, common_row=1.75).manipulate(m, aux)
    v = verdict("forensics", bad, m, local)
    assert any(f.check == "forensics.zero-rows" and f.value >= 9 for f in v.findings)


@pytest.mark.parametrize("width", [64, 512])  # compared in full, through candidates
def test_twin_rows_are_found_in_narrow_and_wide_layers(width):
    """Near-parallel rows (cosine >= 0.999, at any scale) are counted whether the layer is
    compared in full or through its projected candidates (wide layers); dead rows never."""
    from gradguard.detect.forensics.imprint import has_twin

    g = torch.Generator().manual_seed(width)
    w = torch.randn(256, width, generator=g)
    assert int(has_twin(w).sum()) == 0
    w[5] = 3 * w[7] + 1e-3 * torch.randn(width, generator=g)
    w[10:50] = w[10] + 0.02 * w[10].norm() / width**0.5 * torch.randn(40, width, generator=g)
    w[60:100] = 0.0
    twin = has_twin(w)
    assert twin[5] and twin[7] and bool(twin[10:50].all())
    assert int(twin.sum()) == 42
