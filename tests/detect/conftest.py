import pytest
import torch

from gradguard.data import train_test
from gradguard.fl import LocalTraining, local_update
from gradguard.models import build_model


@pytest.fixture(scope="session")
def digits():
    train, test = train_test("digits")
    return train.subset(range(500)), train.subset(range(1000, 1200)), test


def trained(name, data, norm=None, **kw):
    """An honest model after 2 local epochs on digits."""
    torch.manual_seed(0)
    m = build_model(name, data.image_shape, data.num_classes, norm=norm, **kw)
    u = local_update(m, data, LocalTraining(epochs=2, lr=0.05, batch_size=64))
    sd = m.state_dict()
    for k, d in u.as_delta().items():
        sd[k] = sd[k] + d
    m.load_state_dict(sd)
    return m


@pytest.fixture(scope="session")
def honest(digits):
    train, _, _ = digits
    return {
        "mlp": trained("mlp", train, width=64),
        "convnet": trained("convnet", train, width=64),
        "resnet": trained("resnet", train, norm="batch"),
        "vit": trained("vit-tiny", train),
    }
