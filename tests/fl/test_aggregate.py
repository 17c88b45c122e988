"""Aggregators on planted outliers; secure aggregation's sum; client-level DP."""

import pytest
import torch

from gradguard.errors import GradguardError
from gradguard.fl import aggregate
from gradguard.fl.dp import ClientDP, privatize
from gradguard.fl.secure import mask, secure_sum, unmask_sum
from gradguard.fl.update import Update


def _planted(n_honest=8, n_bad=2, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(d, generator=g)
    honest = center + 0.1 * torch.randn(n_honest, d, generator=g)
    bad = -10 * center + 0.1 * torch.randn(n_bad, d, generator=g)
    return center, torch.cat([bad, honest]), torch.ones(n_honest + n_bad)


@pytest.mark.parametrize("name", ["krum", "multikrum", "median", "trimmed"])
def test_robust_rules_ignore_planted_outliers(name):
    center, v, w = _planted()
    out = aggregate(name, v, w, 2)
    assert float((out - center).norm()) < 0.15 * float(center.norm())
    naive = aggregate("mean", v, w, 2)
    assert float((naive - center).norm()) > 1.5 * float(center.norm())


def test_krum_picks_an_honest_update_and_rules_are_exact():
    _, v, w = _planted()
    out = aggregate("krum", v, w, 2)
    assert any(torch.equal(out, row) for row in v[2:])
    x = torch.tensor([[1.0, 5.0], [2.0, -1.0], [3.0, 0.0], [100.0, 2.0]])
    ones = torch.ones(4)
    assert aggregate("median", x, ones).tolist() == [2.5, 1.0]
    assert aggregate("median", x[:3], ones[:3]).tolist() == [2.0, 0.0]
    assert aggregate("trimmed", x, ones, 1).tolist() == [2.5, 1.0]
    torch.testing.assert_close(
        aggregate("mean", x[:2], torch.tensor([3.0, 1.0])), torch.tensor([1.25, 3.5])
    )
    with pytest.raises(GradguardError, match="unknown aggregator"):
        aggregate("avg", x, ones)


def test_secure_sum_equals_the_plain_sum_and_masks_look_random():
    g = torch.Generator().manual_seed(0)
    vectors = [torch.randn(5000, generator=g) * s for s in (0.01, 1.0, 30.0)]
    ids = [4, 9, 2]
    total = secure_sum(vectors, ids, seed=7)
    torch.testing.assert_close(total, sum(v.double() for v in vectors), atol=2e-6, rtol=0)
    masked = mask(vectors[0], 4, ids, seed=7)
    # uniform on [0, 2^62): mean ~ 2^61, no correlation with the secret vector
    u = masked.double() / 2**62
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.std()) - 12**-0.5) < 0.02
    corr = torch.corrcoef(torch.stack([u, vectors[0].double()]))[0, 1]
    assert abs(float(corr)) < 0.05
    # a lone masked vector does not decode to the client's update
    assert float((unmask_sum([masked]) - vectors[0]).abs().mean()) > 1e3
    with pytest.raises(GradguardError, match="range"):
        mask(torch.tensor([1e13]), 0, [0, 1], 0)


def test_dp_clips_to_c_and_adds_noise():
    values = {"a": torch.full((10,), 3.0), "b": torch.full((2, 5), -4.0)}
    update = Update(values, 10, 1, 0.1)
    clipped = privatize(update, ClientDP(clip=1.0, noise_multiplier=0.0), torch.Generator())
    flat = torch.cat([v.flatten() for v in clipped.values.values()])
    assert abs(float(flat.norm()) - 1.0) < 1e-5
    torch.testing.assert_close(
        clipped.values["a"] / clipped.values["b"].flatten()[0], torch.full((10,), -0.75)
    )
    small = Update({"a": torch.full((4,), 0.1)}, 1, 1, 0.1)
    kept = privatize(small, ClientDP(clip=1.0, noise_multiplier=0.0), torch.Generator())
    torch.testing.assert_close(kept.values["a"], small.values["a"])
    noisy = privatize(
        Update({"a": torch.zeros(20000)}, 1, 1, 0.1),
        ClientDP(clip=0.5, noise_multiplier=2.0),
        torch.Generator().manual_seed(0),
    )
    assert abs(float(noisy.values["a"].std()) - 1.0) < 0.03
    grad = Update({"a": torch.full((4,), 100.0)}, 1, 1, 0.1, "gradient")
    out = privatize(grad, ClientDP(clip=2.0, noise_multiplier=0.0), torch.Generator())
    assert out.kind == "delta" and float(out.values["a"].norm()) == pytest.approx(2.0)
    assert float(out.values["a"][0]) < 0  # a gradient's delta points downhill
    with pytest.raises(GradguardError):
        ClientDP(clip=0.0)


@pytest.mark.parametrize("name", ["mean", "krum", "multikrum", "median", "trimmed"])
def test_non_finite_updates_are_rejected_with_a_logged_reason(name, caplog):
    _, v, w = _planted(n_honest=9, n_bad=0)
    clean = aggregate(name, v[1:], w[1:], 1)
    for bad in (float("nan"), float("inf")):
        poisoned = v.clone()
        poisoned[0, 3] = bad  # one coordinate of one update of 9
        with caplog.at_level("WARNING", logger="gradguard.fl"):
            out = aggregate(name, poisoned, w, 1)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, clean)
        assert "non-finite" in caplog.text
    with pytest.raises(GradguardError, match="non-finite"):
        aggregate(name, torch.full((3, 4), float("nan")), torch.ones(3), 0)
    with pytest.raises(GradguardError, match="weights"):
        aggregate(name, v, torch.full_like(w, float("nan")), 0)


def test_secure_sum_fits_its_scale_or_refuses():
    big = [torch.tensor([1e12, -3e11], dtype=torch.float64)] * 3
    torch.testing.assert_close(secure_sum(big, [0, 1, 2], 1), 3 * big[0], rtol=1e-12, atol=0)
    tiny = [torch.tensor([1e-9, 3e-12], dtype=torch.float64)] * 3
    torch.testing.assert_close(secure_sum(tiny, [0, 1, 2], 1), 3 * tiny[0], rtol=1e-9, atol=0)
    # at a fixed scale the same sums are errors, never a silent wrap or a lost value
    with pytest.raises(GradguardError, match="range"):
        secure_sum(big, [0, 1, 2], 1, bits=20)
    with pytest.raises(GradguardError, match="precision"):
        secure_sum(tiny, [0, 1, 2], 1, bits=20)
    with pytest.raises(GradguardError, match="not finite"):
        secure_sum([torch.tensor([float("nan")])] * 2, [0, 1], 1)


@pytest.mark.parametrize(
    "clip, noise", [(float("inf"), 1.0), (float("nan"), 1.0), (1.0, float("inf")), (1.0, -1.0)]
)
def test_dp_settings_must_be_finite(clip, noise):
    with pytest.raises(GradguardError, match="finite"):
        ClientDP(clip, noise)
