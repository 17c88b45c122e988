import torch

from gradguard.fl.update_checks import UpdateChecks, check_uploads


def _honest(n=5, d=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(d, generator=g)
    return torch.stack([common + 0.5 * torch.randn(d, generator=g) for _ in range(n)])


def test_honest_uploads_pass_both_checks():
    assert not any(v.flagged for v in check_uploads(_honest()))


def test_scaled_sign_flip_fails_the_norm_and_the_cosine_check():
    v = _honest()
    v[0] = -10 * v[0]
    first = check_uploads(v)[0]
    assert first.norm_flagged and first.cosine_flagged


def test_plain_flip_passes_the_norm_check_but_not_the_cosine_check():
    v = _honest()
    v[0] = -v[0]
    first = check_uploads(v, UpdateChecks(norm_ratio=3.0, min_cosine=0.0))[0]
    assert not first.norm_flagged and first.cosine_flagged
