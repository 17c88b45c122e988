import pytest
import torch

from gradguard.attacks import get_attack
from gradguard.data import train_test
from gradguard.fl.client import train_sgd
from gradguard.models import build_model


@pytest.fixture(scope="package")
def digits():
    """(server-side training data, a client's local sample, the server's auxiliary data)."""
    train, test = train_test("digits")
    return train.subset(range(300)), train.subset(range(1000, 1200)), test


def trained(name, data, norm=None, **kw):
    """An honest model after one epoch of plain SGD on digits (batch 32, lr 0.05)."""
    torch.manual_seed(0)
    return train_sgd(build_model(name, data.image_shape, data.num_classes, norm=norm, **kw), data)


@pytest.fixture(scope="package")
def honest(digits):
    train, _, _ = digits
    return {
        "mlp": trained("mlp", train, width=64),
        "convnet": trained("convnet", train, width=64),
        "resnet": trained("resnet", train, norm="batch"),
        "vit": trained("vit-tiny", train),
    }


@pytest.fixture(scope="package")
def imprinted(honest, digits):
    """Parameter-only imprint (64 bins) of the honest mlp and convnet, built once."""
    _, _, aux = digits
    return {
        n: get_attack("imprint", bins=64).manipulate(honest[n], aux)[0] for n in ("mlp", "convnet")
    }
