"""scikit-learn's digits: every image once, scaled to [0, 1], a fixed split."""

import torch

from gradguard.data import digits


def test_digits_split_is_fixed_and_scaled():
    train, test = digits.load()
    assert (len(train), len(test)) == (1438, 359)  # 1797 images, 20% held out
    assert train.x.shape[1:] == (1, 8, 8) and train.num_classes == 10
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) == 1.0
    assert sorted(torch.cat([train.y, test.y]).unique().tolist()) == list(range(10))
    again, _ = digits.load()
    assert again.x.equal(train.x) and again.y.equal(train.y)
