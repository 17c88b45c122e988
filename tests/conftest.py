import os

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# One intra-op thread: the suite's tensors are small, and on 2 cores extra threads only
# contend with each other and with the Flower/Ray worker processes some tests start.
torch.set_num_threads(1)
