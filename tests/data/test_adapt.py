"""What PyTorch users have for data becomes gradguard's Dataset once; the rest is an error."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gradguard.data import Dataset
from gradguard.data.adapt import as_dataset
from gradguard.errors import DataError


def tensors(n=40):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda x, y: (x, y),
        lambda x, y: (x.numpy(), y.numpy()),
        lambda x, y: TensorDataset(x, y),
        lambda x, y: DataLoader(TensorDataset(x, y), batch_size=7),
        lambda x, y: [(x[i], int(y[i])) for i in range(len(x))],  # not a Dataset: a list
    ],
)
def test_pytorch_data_becomes_a_dataset(wrap):
    x, y = tensors()
    data = wrap(x, y)
    if isinstance(data, list):
        with pytest.raises(DataError, match="cannot use a list"):
            as_dataset(data)
        return
    ds = as_dataset(data)
    assert isinstance(ds, Dataset) and len(ds) == 40
    assert torch.equal(ds.x, x) and torch.equal(ds.y, y)


def test_map_style_dataset_and_limit():
    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            x, y = tensors()
            return x[i, 0], int(y[i])  # H x W images, int labels

    ds = as_dataset(Items(), limit=16)
    assert ds.x.shape == (16, 1, 8, 8) and ds.y.dtype == torch.int64


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((torch.rand(4, 3), torch.zeros(4, dtype=torch.long)), "N x C x H x W"),
        ((torch.rand(4, 1, 8, 8), torch.rand(4)), "integer class indices"),
        ((torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long)), "4 inputs but 3 labels"),
        (TensorDataset(torch.rand(4, 1, 8, 8)), "TensorDataset of 1 tensors"),
        ("digits.npz", "cannot use a str"),
    ],
)
def test_unusable_data_is_one_clear_error(data, match):
    with pytest.raises(DataError, match=match):
        as_dataset(data)
