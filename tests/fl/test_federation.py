"""The federation loop: hooks, secure aggregation, sampling, Byzantine clients, determinism."""

import pytest
import torch

from gradguard.data import partition, train_test
from gradguard.errors import GradguardError
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining, ServerHook
from gradguard.fl.byzantine import SignFlip
from gradguard.fl.update import float_state
from gradguard.models import build_model

LOCAL = LocalTraining(steps=3, batch_size=16, lr=0.1)


@pytest.fixture(scope="module")
def digits():
    return train_test("digits")


def _fed(digits, config, hook=None, n=4, poisoned=0, model=None):
    train, test = digits
    torch.manual_seed(0)
    model = model or build_model("mlp", train.image_shape, 10)
    clients = [
        Client(i, p, config.training, poison=SignFlip(10.0) if i < poisoned else None)
        for i, p in enumerate(partition(train, n, "iid"))
    ]
    return Federation(model, clients, test, config, hook)


class Recorder(ServerHook):
    """Sends client 1 a tampered model and records what the server sees."""

    def __init__(self):
        self.sent, self.seen = {}, []

    def model_for(self, rnd, client_id, global_model):
        if client_id != 1:
            return global_model
        evil = build_model("mlp", (1, 8, 8), 10)
        evil.load_state_dict(global_model.state_dict())
        with torch.no_grad():  # every fc1 unit dead: no gradient reaches fc1
            evil.fc1.weight.zero_()
            evil.fc1.bias.fill_(-1.0)
        self.sent[(rnd, client_id)] = evil
        return evil

    def observe(self, rnd, updates, aggregate_delta):
        self.seen.append((rnd, updates, aggregate_delta))


def test_hook_sends_per_client_models_and_sees_updates(digits):
    hook = Recorder()
    fed = _fed(digits, FederationConfig(rounds=2, training=LOCAL), hook)
    before = float_state(fed.model)
    fed.run(progress=False)
    assert set(hook.sent) == {(1, 1), (2, 1)} and len(hook.seen) == 2
    rnd, updates, delta = hook.seen[0]
    assert [u.client_id for u in updates] == [0, 1, 2, 3]
    # client 1 trained on the dead fc1, so its fc1 did not move
    assert float(updates[1].values["fc1.weight"].abs().sum()) == 0
    assert float(updates[0].values["fc1.weight"].abs().sum()) > 0
    # the aggregate is the example-weighted mean of the deltas and it was applied
    w = torch.tensor([float(u.num_examples) for u in updates])
    mean = sum(wi * u.values["head.bias"] for wi, u in zip(w, updates, strict=True)) / w.sum()
    torch.testing.assert_close(delta["head.bias"], mean)
    assert not torch.equal(float_state(fed.model)["head.bias"], before["head.bias"])


def test_secure_aggregation_hides_updates_and_matches_the_mean(digits):
    plain, sec = Recorder(), Recorder()
    _fed(digits, FederationConfig(rounds=1, training=LOCAL), plain).run(progress=False)
    fed = _fed(digits, FederationConfig(rounds=1, training=LOCAL, secure_aggregation=True), sec)
    fed.run(progress=False)
    (_, updates, delta_sec), (_, updates_plain, delta_plain) = sec.seen[0], plain.seen[0]
    assert updates is None and updates_plain is not None
    for k in delta_plain:
        torch.testing.assert_close(delta_sec[k], delta_plain[k], atol=1e-6, rtol=1e-5)
    with pytest.raises(GradguardError, match="only the mean"):
        FederationConfig(secure_aggregation=True, aggregator="krum")


def test_sampling_clients_per_round(digits):
    fed = _fed(digits, FederationConfig(rounds=6, clients_per_round=2, training=LOCAL, seed=3), n=5)
    history = fed.run(progress=False)
    picks = [tuple(r.participants) for r in history]
    assert all(len(p) == 2 and len(set(p)) == 2 for p in picks)
    assert len(set(picks)) > 1 and set().union(*picks) <= set(range(5))
    again = _fed(
        digits, FederationConfig(rounds=6, clients_per_round=2, training=LOCAL, seed=3), n=5
    ).run(progress=False)
    assert [tuple(r.participants) for r in again] == picks
    assert [r.accuracy for r in again] == [r.accuracy for r in history]


def test_abstaining_clients_and_timing(digits):
    train, test = digits
    fed = _fed(digits, FederationConfig(rounds=1, training=LOCAL))
    fed.clients[2].guard = lambda m: False
    r = fed.run(progress=False)[0]
    assert r.abstained == [2] and r.participants == [0, 1, 3]
    assert 0 < r.train_seconds < r.seconds and r.aggregate_seconds > 0
    assert r.overhead_seconds >= 0
    d = r.as_dict()
    assert {
        "round",
        "accuracy",
        "seconds",
        "train_seconds",
        "aggregate_seconds",
        "overhead_seconds",
    } <= set(d)


def test_byzantine_clients_break_the_mean_not_the_median(digits):
    local = LocalTraining(epochs=1, batch_size=16, lr=0.05, momentum=0.9)
    acc = {}
    for agg in ("mean", "median", "krum"):
        fed = _fed(
            digits,
            FederationConfig(rounds=4, training=local, aggregator=agg, byzantine=1),
            n=5,
            poisoned=1,
        )
        acc[agg] = fed.run(progress=False)[-1].accuracy
    assert acc["mean"] < 0.3 and acc["median"] > 0.75 and acc["krum"] > 0.75, acc


def test_dp_federation_and_config_errors(digits):
    from gradguard.fl.dp import ClientDP

    hook = Recorder()
    _fed(digits, FederationConfig(rounds=1, training=LOCAL, dp=ClientDP(0.5, 0.0)), hook).run(
        progress=False
    )
    for u in hook.seen[0][1]:
        norm = torch.cat([v.flatten() for v in u.values.values()]).norm()
        assert float(norm) <= 0.5 + 1e-5
    for kw, word in [
        ({"rounds": 0}, "round"),
        ({"aggregator": "avg"}, "unknown aggregator"),
        ({"clients_per_round": 0}, "per round"),
        ({"byzantine": -1}, "byzantine"),
    ]:
        with pytest.raises(GradguardError, match=word):
            FederationConfig(**kw)


@pytest.mark.parametrize(
    "kw",
    [{"aggregator": "krum", "byzantine": 1}, {"aggregator": "mean"}, {"secure_aggregation": True}],
)
def test_a_nan_update_never_reaches_the_global_model(digits, kw, caplog):
    def nan_poison(update):
        values = {k: v.clone() for k, v in update.as_delta().items()}
        next(iter(values.values())).view(-1)[0] = float("nan")
        return type(update)(
            values,
            update.num_examples,
            update.local_steps,
            update.lr,
            "delta",
            update.client_id,
            update.metrics,
        )

    fed = _fed(digits, FederationConfig(rounds=1, training=LOCAL, **kw))
    fed.clients[2].poison = nan_poison
    with caplog.at_level("WARNING", logger="gradguard.fl"):
        fed.run(progress=False)
    assert all(torch.isfinite(v).all() for v in fed.model.state_dict().values())
    assert "client 2" in caplog.text and "non-finite" in caplog.text
