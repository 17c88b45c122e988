import torch

from gradguard.bench.scoring import leaked_fraction, score_leak


def test_exact_copies_leak_and_noise_does_not():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(6, 1, 8, 8, generator=g)
    exact = score_leak(3, truth, truth[[4, 0, 2]].clone(), 30.0)
    assert (exact.client_id, exact.leaked, exact.recovered, exact.images) == (3, 3, 3, 6)
    assert exact.psnr_mean > 60
    noise = score_leak(1, truth, torch.rand(6, 1, 8, 8, generator=g), 30.0)
    assert noise.leaked == 0 and noise.psnr_mean < 15
    assert leaked_fraction([exact, noise]) == 3 / 12
    unknown = score_leak(2, None, truth, 30.0)  # no ground truth: nothing counts
    assert unknown.leaked == 0 and unknown.recovered == 6
