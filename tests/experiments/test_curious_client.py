import math

import torch

from gradguard.experiments.curious_client import confidence, contributors, paired_gains
from gradguard.fl.aggregate import aggregate


def test_confidence_is_the_student_t_interval():
    mean, half = confidence([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    # t(0.975, 4) = 2.776, standard error sqrt(2.5 / 5)
    assert math.isclose(half, 2.776 * math.sqrt(0.5), rel_tol=1e-3)
    assert confidence([2.0]) == (2.0, 0.0)


def test_contributors_name_the_update_krum_returns_and_multikrum_averages():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 30, generator=g)
    v[0] = 50 * v[0]  # an outlier, never chosen
    w = torch.ones(5)
    (k,) = contributors("krum", v, 1)
    assert k != 0 and torch.equal(aggregate("krum", v, w, 1), v[k])
    chosen = contributors("multikrum", v, 1)
    assert 0 not in chosen
    assert torch.allclose(aggregate("multikrum", v, w, 1), v[chosen].mean(0), atol=1e-6)
    assert contributors("median", v, 1) == [0, 1, 2, 3, 4]


def test_gain_is_paired_with_mean_aggregation_honest_upload_no_dp_on_the_same_seed():
    def row(aggregator, seed, psnr):
        return {
            "dataset": "d",
            "aggregator": aggregator,
            "dp_noise": None,
            "upload": "honest",
            "seed": seed,
            "psnr_mean": psnr,
        }

    rows = [row("mean", 0, 10.0), row("mean", 1, 20.0), row("krum", 0, 11.5), row("krum", 1, 21.0)]
    gains = {g["aggregator"]: g for g in paired_gains(rows)}
    assert gains["mean"]["gain"] == 0.0
    assert math.isclose(gains["krum"]["gain"], (0.15 + 0.05) / 2)
    assert gains["krum"]["seeds_at_10pct"] == 1 and gains["krum"]["seeds"] == 2
