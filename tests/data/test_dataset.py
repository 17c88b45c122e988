"""The Dataset type refuses malformed tensors with one DataError and subsets by index."""

import pytest
import torch

from gradguard.data import Dataset
from gradguard.errors import DataError


def _data(n=6):
    return Dataset(torch.rand(n, 1, 4, 4), torch.arange(n) % 3, 3, "toy")


def test_shape_and_subset():
    d = _data()
    assert len(d) == 6 and d.image_shape == (1, 4, 4)
    part = d.subset([4, 1], name="part")
    assert part.x.equal(d.x[[4, 1]]) and part.y.tolist() == [1, 1]
    assert (part.name, part.num_classes) == ("part", 3)
    assert d.subset(torch.tensor([0])).name == "toy"


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.rand(4, 4, 4), torch.zeros(4, dtype=torch.long), "N x C x H x W"),
        (torch.rand(4, 1, 4, 4).double(), torch.zeros(4, dtype=torch.long), "float32"),
        (torch.rand(4, 1, 4, 4), torch.zeros(3, dtype=torch.long), "4 images but 3 labels"),
        (torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long), "empty"),
    ],
)
def test_malformed_tensors_are_one_clear_error(x, y, match):
    with pytest.raises(DataError, match=match):
        Dataset(x, y, 10, "bad")
