"""The Flower guard mod as a security boundary, with hand-built Messages (no engine).

A fake handler records whether it ran. The server writes the run config and the messages;
the client's code and node config are the client's. Whatever the server sends, the handler
never runs on a model the client's Guard flags or cannot verify, and the mod never raises.
"""

import math
import time

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

import torch  # noqa: E402
from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message  # noqa: E402
from flwr.common.constant import ErrorCode  # noqa: E402

from gradguard.attacks import get_attack  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.detect.thresholds import DEFAULTS  # noqa: E402
from gradguard.integrations.flower.mod import REASON_PREFIX, guard_mod  # noqa: E402
from gradguard.models import build_model  # noqa: E402

pytestmark = pytest.mark.flower

EVERY_THRESHOLD_INF = ",".join(f"{k}=inf" for k in DEFAULTS)
DISARMING_RUN_CONFIGS = [
    {"guard-detectors": ","},
    {"guard-detectors": "architecture"},
    {"guard-policy": "warn"},
    {"guard-thresholds": "forensics.duplicate_rows=inf"},
    {"guard-thresholds": EVERY_THRESHOLD_INF},
    {"guard-thresholds": "forensics.duplicate_rows=nan,warmup+.z=1e300,typo.key=0.5"},
    {"guarded": "none"},
    {"guarded": False},
    {
        "guard-policy": "warn",
        "guard-detectors": "architecture",
        "guard-thresholds": EVERY_THRESHOLD_INF,
        "guarded": "none",
    },
]


@pytest.fixture(scope="module")
def models():
    """(client template = honest global model, imprinted model, NaN model, local sample)."""
    train, test = train_test("digits")
    torch.manual_seed(0)
    honest = build_model("mlp", train.image_shape, train.num_classes, width=32)
    imprinted = get_attack("imprint", bins=32).manipulate(honest, test)[0]
    nan = {k: v.clone() for k, v in honest.state_dict().items()}
    nan["fc1.weight" if "fc1.weight" in nan else next(iter(nan))].view(-1)[3] = math.nan
    return honest, imprinted.state_dict(), nan, train.subset(range(64))


def message(content, message_type="train"):
    md = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type=message_type,
    )
    if isinstance(content, Error):
        return make_message(md, error=content)
    if isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values()):
        content = RecordDict(
            {"arrays": ArrayRecord(content), "config": ConfigRecord({"server-round": 1})}
        )
    return make_message(md, content)


def context(run_config=None, node_config=None):
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, **(node_config or {})},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )


class Handler:
    """A fake ClientApp handler: records that it ran, replies like an honest client."""

    def __init__(self, reply=None):
        self.calls = 0
        self.reply = reply

    def __call__(self, msg, ctx):
        self.calls += 1
        if self.reply is not None:
            return self.reply(msg)
        content = RecordDict({"metrics": MetricRecord({"num-examples": 8})})
        if msg.metadata.message_type.startswith("train"):
            content["arrays"] = next(iter(msg.content.array_records.values()))
        return Message(content, reply_to=msg)


def assert_abstained(reply, handler, *words):
    assert handler.calls == 0, "the handler ran"
    assert reply.has_error()
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert reply.error.reason.startswith(REASON_PREFIX)
    for w in words:
        assert w in reply.error.reason, reply.error.reason


def run_mod(mod, content, message_type="train", run_config=None, node_config=None, handler=None):
    handler = handler or Handler()
    reply = mod(message(content, message_type), context(run_config, node_config), handler)
    return reply, handler


def test_honest_model_reaches_the_handler_with_the_verdict(models):
    honest, _, _, local = models
    reply, handler = run_mod(guard_mod(honest, local), honest.state_dict())
    assert handler.calls == 1 and not reply.has_error()
    assert reply.content["metrics"]["gradguard-flagged"] == 0


@pytest.mark.parametrize("run_config", DISARMING_RUN_CONFIGS, ids=str)
def test_a_disarming_run_config_still_abstains_on_an_imprint_model(models, run_config):
    honest, imprinted, _, local = models
    mod = guard_mod(honest, local)
    reply, handler = run_mod(mod, imprinted, run_config=run_config)
    assert_abstained(reply, handler, "imprint")
    # the honest model still passes under the same run config: nothing was broken
    reply, handler = run_mod(mod, honest.state_dict(), run_config=run_config)
    assert handler.calls == 1 and not reply.has_error()
    ignored = reply.content["metrics"]["gradguard-ignored"]
    assert (ignored > 0) == any(k.startswith("guard-") for k in run_config)


@pytest.fixture(scope="module")
def shipped():
    """(scenario, imprint of its initial model) for ``apps:client``."""
    from gradguard.bench.scenario import Scenario
    from gradguard.bench.setup import build

    sc = Scenario(clients=2, rounds=2, train_limit=600, aux_size=64)
    setup = build(sc)
    return sc, get_attack("imprint", bins=256).manipulate(setup.model, setup.aux)[0].state_dict()


@pytest.mark.parametrize("run_config", DISARMING_RUN_CONFIGS, ids=str)
def test_the_shipped_client_app_ignores_a_disarming_run_config(shipped, run_config):
    """``apps:client`` as ``flwr run`` loads it: task from the run config, guard switch and
    settings from the node (here: no node setting, so on with the defaults)."""
    from gradguard.integrations.flower.apps import client_app

    sc, imprinted = shipped
    ctx = context({**sc.to_run_config(), **run_config}, {"num-partitions": 2})
    reply = client_app()(message(imprinted), ctx)
    assert reply.has_error() and reply.error.reason.startswith(REASON_PREFIX)
    assert "imprint" in reply.error.reason


def test_a_run_config_may_tighten(models):
    honest, imprinted, _, local = models
    warn = guard_mod(honest, local, policy="warn")
    weak = guard_mod(honest, local, detectors=("architecture",))
    for mod in (warn, weak):  # the client's own (weak) choices: it trains on the imprint
        reply, handler = run_mod(mod, imprinted)
        assert handler.calls == 1 and not reply.has_error()
    reply, handler = run_mod(warn, imprinted, run_config={"guard-policy": "abstain"})
    assert_abstained(reply, handler, "imprint")
    reply, handler = run_mod(weak, imprinted, run_config={"guard-detectors": "forensics"})
    assert_abstained(reply, handler, "imprint")
    stricter = {
        "guard-policy": "abstain",
        "guard-detectors": "architecture,forensics",
        "guard-thresholds": "architecture.max_abs=1e-6",
    }
    settings, ignored = weak.settings(context(stricter))
    assert settings["detectors"] == ("architecture", "forensics")
    assert settings["thresholds"] == {"architecture.max_abs": 1e-6}
    assert ignored == []
    reply, handler = run_mod(weak, honest.state_dict(), run_config=stricter)
    assert_abstained(reply, handler)  # the lowered max_abs flags the honest model


def test_the_node_config_is_the_operators(models):
    honest, imprinted, _, local = models
    mod = guard_mod(honest, local)
    # the operator may choose a weaker guard for its own node (its decision, not the server's)
    reply, handler = run_mod(mod, imprinted, node_config={"guard-detectors": "architecture"})
    assert handler.calls == 1 and not reply.has_error()
    # an invalid node setting fails closed
    for bad in ({"guard-policy": "off"}, {"guard-thresholds": "forensics.zero_rows"}):
        reply, handler = run_mod(mod, honest.state_dict(), node_config=bad)
        assert_abstained(reply, handler, "node config")


@pytest.mark.parametrize(
    "message_type", ["train.custom", "evaluate", "evaluate.holdout", "query", "query.x"]
)
def test_every_message_type_carrying_arrays_is_checked(models, message_type):
    honest, imprinted, nan, local = models
    mod = guard_mod(honest, local)
    reply, handler = run_mod(mod, nan, message_type)
    assert_abstained(reply, handler, "non-finite")
    reply, handler = run_mod(mod, imprinted, message_type)
    assert_abstained(reply, handler, "imprint")


def test_every_array_record_is_checked_and_arrayless_messages_pass(models):
    honest, imprinted, _, local = models
    mod = guard_mod(honest, local)
    two = RecordDict({"arrays": ArrayRecord(honest.state_dict()), "extra": ArrayRecord(imprinted)})
    reply, handler = run_mod(mod, two)
    assert_abstained(reply, handler, "extra")
    query = RecordDict({"config": ConfigRecord({"ask": "partition-id"})})
    reply, handler = run_mod(mod, query, "query")
    assert handler.calls == 1 and not reply.has_error()


def test_unreadable_arrays_abstain(models):
    honest, _, _, local = models
    garbage = Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=b"\x93NUMPY junk")
    content = RecordDict({"arrays": ArrayRecord({"fc1.weight": garbage})})
    reply, handler = run_mod(guard_mod(honest, local), content)
    assert_abstained(reply, handler, "unreadable")


def test_failing_template_or_data_function_abstains(models):
    honest, imprinted, _, local = models

    def boom(ctx):
        raise RuntimeError("disk gone")

    for mod in (guard_mod(boom, local), guard_mod(honest, boom)):
        for state in (honest.state_dict(), imprinted):
            reply, handler = run_mod(mod, state)
            assert_abstained(reply, handler, "disk gone")


def test_error_message_and_broken_replies_abstain_without_raising(models):
    honest, _, _, local = models
    mod = guard_mod(honest, local)
    carrying_error = Error(code=ErrorCode.UNKNOWN, reason="server-side failure")
    reply, handler = run_mod(mod, carrying_error)
    assert_abstained(reply, handler, "server-side failure")

    def empty(msg):
        return Message(RecordDict(), reply_to=msg)

    def raises(msg):
        raise ValueError("handler bug")

    for fake, words in ((empty, "no ArrayRecord"), (raises, "handler bug")):
        reply, handler = run_mod(mod, honest.state_dict(), handler=Handler(fake))
        assert handler.calls == 1 and reply.has_error()
        assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
        assert words in reply.error.reason


def test_switch_that_cannot_be_read_keeps_the_guard_on(models):
    honest, imprinted, _, local = models

    def unreadable(ctx):
        raise KeyError("guarded")

    mod = guard_mod(honest, local, enabled=unreadable)
    reply, handler = run_mod(mod, imprinted)
    assert_abstained(reply, handler, "imprint")
    reply, handler = run_mod(guard_mod(honest, local, enabled=lambda ctx: False), imprinted)
    assert handler.calls == 1  # a client that switched its own guard off trains


def test_users_data_and_loss_are_taken_once_at_construction(models):
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from gradguard.errors import DataError

    honest, imprinted, _, local = models
    losses = []

    def loss(out, y):
        losses.append(len(y))
        return F.cross_entropy(out, y)

    loader = DataLoader(TensorDataset(local.x, local.y), batch_size=16)
    mod = guard_mod(honest, loader, loss=loss)
    reply, handler = run_mod(mod, honest.state_dict())
    assert handler.calls == 1 and not reply.has_error() and losses
    reply, handler = run_mod(mod, imprinted)
    assert_abstained(reply, handler, "imprint")
    # data the client's model cannot take: an error when the mod is built, not every round
    with pytest.raises(DataError, match="cannot be trained on the local data"):
        guard_mod(honest, (torch.rand(8, 3, 32, 32), local.y[:8]))
    with pytest.raises(DataError, match="cannot use a str"):
        guard_mod(honest, "my-data-folder")


def test_the_verdict_crosses_the_wire_as_a_record(models):
    from gradguard.integrations.flower.verdict import VERDICT_KEY, detectors_of, from_reason

    honest, imprinted, _, local = models
    mod = guard_mod(honest, local)
    reply, _ = run_mod(mod, honest.state_dict())
    record = reply.content.config_records[VERDICT_KEY]
    assert record["flagged"] is False and record["allowed"] is True and record["verified"]
    assert record["batch"] > 0 and record["exposed"] >= 0  # the leakage audit ran
    reply, handler = run_mod(mod, imprinted)
    assert_abstained(reply, handler)
    fields = from_reason(reply.error.reason)
    assert fields["flagged"] is True and fields["allowed"] is False
    assert "imprint" in fields["summary"] and fields["score"] > 0
    per = detectors_of(fields)  # each detector's own verdict travels too
    assert per["forensics"]["malicious"] is True and "imprint" in per["forensics"]["reason"]


def test_warn_trains_on_a_flagged_model_that_never_becomes_the_reference(models):
    """The one rule of :class:`gradguard.fl.guarded.ClientGuard`, kept in Context.state."""
    from gradguard.integrations.flower.mod import STATE_PREVIOUS, arrays_to_state
    from gradguard.integrations.flower.verdict import VERDICT_KEY

    honest, imprinted, _, local = models
    mod = guard_mod(honest, local, policy="warn")
    ctx = context()
    handler = Handler()
    reply = mod(message(honest.state_dict()), ctx, handler)
    assert not reply.has_error()
    reference = arrays_to_state(ctx.state[STATE_PREVIOUS])
    assert all(torch.equal(reference[k], v) for k, v in honest.state_dict().items())
    reply = mod(message(imprinted), ctx, handler)
    assert handler.calls == 2 and not reply.has_error()  # warn: the client trains on it
    assert reply.content.config_records[VERDICT_KEY]["flagged"] is True
    kept = arrays_to_state(ctx.state[STATE_PREVIOUS])
    assert all(torch.equal(kept[k], v) for k, v in reference.items())
