import math

import torch

from gradguard.experiments.curious_client import confidence, contributors, gain_over_mean
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


def test_gain_is_relative_to_mean_aggregation_with_an_honest_upload_and_no_dp():
    summary = [
        {
            "dataset": "d",
            "aggregator": "mean",
            "dp_noise": None,
            "upload": "honest",
            "psnr_mean": 10.0,
        },
        {
            "dataset": "d",
            "aggregator": "krum",
            "dp_noise": None,
            "upload": "flip",
            "psnr_mean": 11.5,
        },
    ]
    gains = {g["aggregator"]: g["gain"] for g in gain_over_mean(summary)}
    assert gains["mean"] == 0.0 and math.isclose(gains["krum"], 0.15)
