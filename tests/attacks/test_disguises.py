"""Adaptive (white-box) disguises of the analytic attacks: they still leak, and they pass
the checks they were designed against (docs/attacks.md, "Adaptive disguises")."""

import inspect

import pytest
import torch

from gradguard.attacks.inversion.analytic import invert_bins
from gradguard.attacks.server.curious import Curious
from gradguard.attacks.server.imprint import Imprint
from gradguard.bench.attack_round import run_attack
from gradguard.data import train_test
from gradguard.detect import Guard, GuardConfig
from gradguard.detect.filters import transmit_ratio
from gradguard.models import build_model

CONV_ONLY = ("conv_mix", "honest_channels", "bend")


def adaptive(cls, model: str) -> dict:
    return {k: v for k, v in cls.adaptive.items() if model == "convnet" or k not in CONV_ONLY}


SIGNATURES = ("architecture", "forensics", "transmit-snr", "warmup+")


def guard_verdict(
    result, model: str, detectors: tuple[str, ...] = SIGNATURES, previous=None, state=None
):
    """A Guard of ``detectors`` (default: the signature checks the disguises were designed
    against, the default Guard before the leakage audit) on the digits client's data, on
    the attacked model (or ``state``)."""
    local = train_test("digits", limit=1000)[0]
    width = result.manipulated.fc1.out_features
    template = build_model(model, local.image_shape, local.num_classes, width=width)
    config = GuardConfig(detectors=detectors, stop_at_first=False)
    guard = Guard(config, template=template, data=local)
    if state is None:
        state = {k: v.detach() for k, v in result.manipulated.state_dict().items()}
    return guard.check(state, previous)


def default_guard_verdict(result, model: str, previous: bool = False):
    """The default Guard; ``previous``: the client accepted the honest model last round."""
    last = {k: v.detach() for k, v in result.honest.state_dict().items()} if previous else None
    return guard_verdict(result, model, GuardConfig().detectors, last)


@pytest.mark.parametrize("cls", [Imprint, Curious])
def test_dials_start_at_the_textbook_default(cls):
    params = inspect.signature(cls).parameters
    for dial, values in cls.dials.items():
        assert params[dial].default == values[0], dial
    assert set(cls.adaptive) <= set(params)


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_adaptive_imprint_leaks_passes_the_signatures_and_the_audit_flags_it(model):
    r = run_attack(
        "imprint", dataset="digits", model=model, batch_size=16, **adaptive(Imprint, model)
    )
    assert r.leaked_fraction >= 0.4
    verdict = guard_verdict(r, model)
    assert verdict.verified and not verdict.malicious, verdict.summary()
    assert default_guard_verdict(r, model).malicious  # the leakage audit sees the leak
    if model == "convnet":
        assert float(transmit_ratio(r.manipulated.conv1.weight).max()) < 1


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_disguised_trap_rows_are_flagged_on_first_contact(model):
    """Every row a trap, with the signature disguises (binomial signs, honest scale and
    biases, a blurred pass-through on convnet): it passes the signature checks, and on first
    contact the default Guard flags the rows that fire for one sample alone."""
    opts = {**adaptive(Curious, model), "traps": None}
    r = run_attack("curious", dataset="digits", model=model, batch_size=16, neurons=256, **opts)
    assert r.leaked_fraction >= 0.6
    assert not guard_verdict(r, model).malicious
    first = default_guard_verdict(r, model)
    assert first.malicious, first.summary()
    assert any(f.check.startswith("exposure.lone") and f.flagged for f in first.findings)


def lone_flagged(verdict, size: int) -> bool:
    return any(f.check == f"exposure.lone{size}" and f.flagged for f in verdict.findings)


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_few_trap_rows_among_honest_rows_are_flagged_on_first_contact(model):
    """The white-box answer to an absolute lone-unit bar (the frontier's adaptive point): 128
    trap rows among 872 honest ones, tuned to a batch of 64. It leaks more than the honest
    model (mlp: 0.38 by the per-row decoder; convnet: 0), and a layer isolating that many
    more samples than fresh inits of the client's own architecture is flagged; an
    independent fresh init of the same width is not."""
    r = run_attack(
        "curious", dataset="digits", model=model, batch_size=64, **adaptive(Curious, model)
    )
    assert r.leaked_fraction >= 0.35
    first = default_guard_verdict(r, model)
    assert first.malicious and lone_flagged(first, 64), first.summary()
    torch.manual_seed(1)
    other = build_model(model, tuple(r.originals.shape[1:]), 10, width=1000)
    honest = guard_verdict(r, model, GuardConfig().detectors, None, state=other.state_dict())
    assert not honest.malicious, honest.summary()


def test_few_trap_rows_tuned_to_a_batch_of_16_are_flagged():
    """Half the rows traps, half honest, at a client batch of 16: most of the batch leaks;
    the lone-unit excess at batch 16 flags it on first contact and against the last
    accepted model."""
    r = run_attack(
        "curious",
        dataset="digits",
        model="mlp",
        batch_size=16,
        neurons=256,
        **adaptive(Curious, "mlp"),
    )
    assert r.leaked_fraction >= 0.6
    first = default_guard_verdict(r, "mlp")
    assert first.malicious and lone_flagged(first, 16), first.summary()
    assert default_guard_verdict(r, "mlp", previous=True).malicious


def test_textbook_imprint_is_still_caught():
    r = run_attack("imprint", dataset="digits", model="mlp", batch_size=16, bins=128)
    assert default_guard_verdict(r, "mlp").malicious


def test_blurred_pass_through_is_inverted_by_the_decoder():
    r = run_attack("imprint", dataset="digits", model="convnet", batch_size=16, conv_mix=0.6)
    assert float(transmit_ratio(r.manipulated.conv2.weight).max()) < 1
    assert r.leaked_fraction >= 0.6
    assert r.match.psnr.max() > 50  # a lone sample comes back through the inverted blur


def test_bin_difference_divides_out_row_gains():
    x = torch.rand(3, 10)
    m = torch.tensor([0.1, 0.5, 0.9])
    q = torch.tensor([0.0, 0.3, 0.7])
    fires = (m[:, None] > q[None, :]).double()
    grad = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)[:, None]
    gain = torch.tensor([0.5, 2.0, 1.3], dtype=torch.float64)
    order = torch.tensor([2, 0, 1])  # thresholds sit at shuffled rows
    dw = torch.zeros(3, 10, dtype=torch.float64)
    db = torch.zeros(3, dtype=torch.float64)
    dw[order] = gain[order, None] * ((fires * grad).T @ x.double())
    db[order] = gain[order] * (fires * grad).sum(0)
    rec, rows = invert_bins(dw, db, order, gain=gain)
    assert torch.allclose(rec, x, atol=1e-6) and rows.tolist() == order.tolist()


def test_bent_pass_through_is_inverted_by_the_decoder_and_not_by_a_linear_readout():
    from gradguard.detect.readout import image_readout

    r = run_attack("curious", dataset="digits", model="convnet", batch_size=64, bend=0.9)
    assert r.leaked_fraction >= 0.6
    assert r.match.psnr.max() > 50  # a lone sample comes back through the undone bend
    local = train_test("digits", limit=1000)[0]
    state = {k: v.detach() for k, v in r.manipulated.state_dict().items()}
    read = image_readout(r.manipulated, state, local.x[64:256], local.x[:64])
    assert read is not None and read.share(30.0) == 0.0
