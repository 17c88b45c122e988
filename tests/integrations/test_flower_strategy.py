"""The malicious strategy as plain Flower plumbing around the campaign, with hand-built
replies and a fake grid (no engine): each node gets the model the campaign chooses for its
partition, and what the campaign recovers comes from the replies it really receives."""

import time

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.app.message.message import make_message  # noqa: E402

from gradguard.attacks import get_attack  # noqa: E402
from gradguard.bench.campaign import Campaign  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.fl import LocalTraining, local_update  # noqa: E402
from gradguard.integrations.flower.mod import arrays_to_state  # noqa: E402
from gradguard.integrations.flower.strategy import MaliciousFedAvg  # noqa: E402
from gradguard.integrations.flower.verdict import failure_fields, to_reason  # noqa: E402
from gradguard.models import build_model  # noqa: E402

pytestmark = pytest.mark.flower
NODES = {11: 0, 12: 1, 13: 2}  # node id -> partition id


class Grid:
    def get_node_ids(self):
        return list(NODES)


def reply_to(msg, content=None, error=None):
    md = Metadata(
        run_id=1,
        message_id="",
        src_node_id=msg.metadata.dst_node_id,
        dst_node_id=0,
        reply_to_message_id="m",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type=msg.metadata.message_type,
    )
    return make_message(md, content) if error is None else make_message(md, error=error)


def trained(msg, batches, model):
    """An honest client's reply: its FedSGD step on the arrays it received."""
    received = arrays_to_state(msg.content["arrays"])
    model.load_state_dict(received)
    pid = NODES[msg.metadata.dst_node_id]
    training = LocalTraining(batch_size=16, lr=0.05, fedsgd=True)
    update = local_update(model, batches[pid], training, torch.Generator().manual_seed(pid))
    new = {
        k: v + update.as_delta()[k] if k in update.as_delta() else v for k, v in received.items()
    }
    metrics = MetricRecord({"num-examples": 16, "local-steps": 1, "lr": 0.05})
    return reply_to(msg, RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}))


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """What a ServerApp process has set when a strategy builds its messages."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="module")
def setup():
    train, aux = train_test("digits")
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = {p: train.subset(order[p * 16 : (p + 1) * 16]) for p in NODES.values()}
    return model, aux, batches


def strategy(model, campaign):
    return MaliciousFedAvg(
        model, campaign, partition_of=NODES, fraction_train=1.0, min_available_nodes=3
    )


def test_per_client_models_and_the_target_read_from_the_replies(setup):
    model, aux, batches = setup
    truth = {p: b.x for p, b in batches.items()}
    s = strategy(model, Campaign(get_attack("inconsistency", target=1), (1,), None, aux, truth))
    messages = list(s.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), Grid()))
    sent = {NODES[m.metadata.dst_node_id]: arrays_to_state(m.content["arrays"]) for m in messages}
    assert sent[1]["head.weight"].any()  # the target: the imprinted model
    assert not sent[0]["head.weight"].any() and not sent[2]["head.weight"].any()
    replies = [trained(m, batches, model) for m in messages]
    arrays, _ = s.aggregate_train(1, replies)
    report = s.reports[1]
    assert report.targeted == [0, 1, 2] and report.abstained == []
    assert [k.client_id for k in report.leaks] == [1] and report.leaks[0].leaked >= 8
    assert arrays is not None


def test_abstentions_arrive_as_records_and_honest_rounds_send_the_global_model(setup):
    model, aux, batches = setup
    s = strategy(model, Campaign(get_attack("imprint"), (2,), (0,), aux))
    messages = list(s.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), Grid()))
    honest = model.state_dict()
    for m in messages:  # round 1 is not attacked: everyone gets the global model
        assert all(torch.equal(arrays_to_state(m.content["arrays"])[k], honest[k]) for k in honest)
    from flwr.app import Error

    refusal = {**failure_fields("imprint on fc1: 256 of 256 rows"), "score": 3.5}
    replies = [
        reply_to(m, error=Error(code=1, reason=to_reason(refusal)))
        if NODES[m.metadata.dst_node_id] == 0
        else trained(m, batches, model)
        for m in messages
    ]
    s.aggregate_train(1, replies)
    report = s.reports[1]
    assert report.abstained == [0] and not report.attacked and report.leaks == []
    (verdict,) = report.verdicts
    assert (verdict.client_id, verdict.malicious, verdict.allowed, verdict.score) == (
        0,
        True,
        False,
        3.5,
    )
    assert "imprint" in verdict.summary
