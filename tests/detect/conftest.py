import pytest
import torch
from torch.nn import functional as F

from gradguard.attacks import get_attack
from gradguard.data import train_test
from gradguard.models import build_model


@pytest.fixture(scope="package")
def digits():
    """(server-side training data, a client's local sample, the server's auxiliary data)."""
    train, test = train_test("digits")
    return train.subset(range(300)), train.subset(range(1000, 1200)), test


def trained(name, data, norm=None, **kw):
    """An honest model after one epoch of plain SGD on digits (batch 32, lr 0.05).

    By hand rather than through torch.optim, whose first use imports torch._dynamo (seconds).
    """
    torch.manual_seed(0)
    m = build_model(name, data.image_shape, data.num_classes, norm=norm, **kw)
    m.train()
    order = torch.randperm(len(data))
    for i in range(0, len(data), 32):
        idx = order[i : i + 32]
        loss = F.cross_entropy(m(data.x[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads, strict=True):
                p.sub_(0.05 * g)
    return m.eval()


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
