"""A user's own BatchNorm CNN behind Flower's stock FedAvg (examples/flower_own_model).

Stock FedAvg averages every array, so BatchNorm's int64 ``num_batches_tracked`` reaches the
clients as float64 from round 2 on. The guarded clients must accept those rounds, abstain
only in the round where the server tampers with the model, and end as accurate as an
unguarded honest federation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Context  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower_own_model"
CLIENTS, ROUNDS, TAMPERED = 3, 4, 2

pytestmark = [pytest.mark.flower, pytest.mark.slow]


@pytest.fixture
def example(monkeypatch):
    # the app's own package, for this process and for the Ray workers the simulation starts
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(EXAMPLE), path) if p))
    sys.path.insert(0, str(EXAMPLE))
    try:
        from own_model import client_app, task

        yield client_app, task
    finally:
        sys.path.remove(str(EXAMPLE))


def imprint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Robbing the Fed's signature on the first linear layer: 32 rows measuring the same
    feature direction with increasing thresholds (one bin each)."""
    state = {k: v.clone() for k, v in state.items()}
    w, b = state["fc.weight"], state["fc.bias"]
    w[:32] = 1.0 / w.shape[1]
    b[:32] = -torch.linspace(0.0, 1.0, 32)
    return state


class Recording(FedAvg):
    """Stock FedAvg that counts failed replies per round and may tamper once."""

    def __init__(self, tamper_round: int | None, log: dict, **kw) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, **kw)
        self.tamper_round, self.log = tamper_round, log

    def configure_train(self, server_round, arrays, config, grid):
        if server_round == self.tamper_round:
            arrays = ArrayRecord(imprint(arrays.to_torch_state_dict()))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self.log.setdefault("failed", {})[server_round] = sum(m.has_error() for m in replies)
        self.log.setdefault("reasons", []).extend(m.error.reason for m in replies if m.has_error())
        return super().aggregate_train(server_round, replies)


def server(task, tamper_round: int | None, log: dict) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(0)
        result = Recording(tamper_round, log, min_available_nodes=CLIENTS).start(
            grid=grid, initial_arrays=ArrayRecord(task.Net().state_dict()), num_rounds=ROUNDS
        )
        model = task.Net()
        model.load_state_dict(result.arrays.to_torch_state_dict())
        log["accuracy"] = task.evaluate(model, task.load_data(0, CLIENTS)[1])[1]
        log["count_dtype"] = str(result.arrays["bn.num_batches_tracked"].dtype)

    return app


def test_stock_fedavg_batchnorm_tensordataset(example):
    from gradguard.integrations.flower.simulation import ray_session, simulate

    client_app, task = example
    guarded, honest = {}, {}
    with ray_session(num_cpus=2):
        simulate(server(task, TAMPERED, guarded), client_app.make_app(guarded=True), CLIENTS)
        simulate(server(task, None, honest), client_app.make_app(guarded=False), CLIENTS)
    print(
        f"\nguarded, tampered in round {TAMPERED}: failed replies {guarded['failed']}, "
        f"accuracy {guarded['accuracy']:.3f}; unguarded honest: failed {honest['failed']}, "
        f"accuracy {honest['accuracy']:.3f}"
    )
    # FedAvg really turned the count into a float, and the guard accepted it
    assert guarded["count_dtype"] == "float64"
    # every client abstained in the tampered round, and in no other round
    assert guarded["failed"] == {r: CLIENTS if r == TAMPERED else 0 for r in range(1, ROUNDS + 1)}
    assert all("forensics.imprint" in r for r in guarded["reasons"]), guarded["reasons"]
    assert honest["failed"] == dict.fromkeys(range(1, ROUNDS + 1), 0)
    # one round fewer of training, the same model quality
    assert honest["accuracy"] > 0.85
    assert guarded["accuracy"] >= honest["accuracy"] - 0.05
