"""A maliciously curious client as a Flower ``ClientApp`` among honest ones (seed 001).

Every partition trains honestly with :func:`gradguard.fl.local_update`; the ``curious``
partition uploads per :mod:`gradguard.attacks.client.uploads` and keeps, in its node's
``Context.state``, the global model it started from and what it sent. When the next round's
global model arrives it writes the :class:`~gradguard.attacks.client.curious.Observation`
(safetensors) into ``record_dir``, for :func:`~gradguard.attacks.client.peer_inversion.
invert_peers`. It sees only what a Flower client sees: the arrays it receives, its own data.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from gradguard.attacks.client.curious import Observation
from gradguard.attacks.client.uploads import craft_upload
from gradguard.data import Dataset
from gradguard.fl import LocalTraining, local_update
from gradguard.integrations.flower.mod import arrays_to_state

STATE_BEFORE = "curious-before"
STATE_UPLOAD = "curious-upload"


def curious_client_app(
    parts: list[Dataset],
    template: nn.Module,
    training: LocalTraining,
    record_dir: str | Path,
    curious: int = 0,
    upload: str = "honest",
) -> ClientApp:
    """Partition ``curious`` is the curious client; the others are honest."""
    app = ClientApp()
    record = Path(record_dir)

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        received = arrays_to_state(msg.content["arrays"])
        model = copy.deepcopy(template)
        model.load_state_dict(received, strict=True)
        rnd = int(msg.content["config"].get("server-round", 0))
        gen = torch.Generator().manual_seed(rnd * 101 + pid)
        update = local_update(model, parts[pid], training, gen, pid)
        if pid == curious:
            update = craft_upload(upload, update)
            _observe(ctx, received, update.flat(list(received)), rnd, upload, record)
        new = {k: v + update.values[k] for k, v in received.items()}
        metrics = MetricRecord({"num-examples": update.num_examples})
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)

    return app


def _observe(
    ctx: Context,
    state: dict[str, torch.Tensor],
    sent: torch.Tensor,
    rnd: int,
    upload: str,
    record: Path,
) -> None:
    if STATE_BEFORE in ctx.state.array_records:
        before = arrays_to_state(ctx.state[STATE_BEFORE])
        previous = arrays_to_state(ctx.state[STATE_UPLOAD])["upload"]
        keys = list(before)
        record.mkdir(parents=True, exist_ok=True)
        Observation(rnd - 1, keys, before, state, previous, upload).save(
            record / f"round{rnd - 1}.safetensors"
        )
    ctx.state[STATE_BEFORE] = ArrayRecord({k: v.contiguous() for k, v in state.items()})
    ctx.state[STATE_UPLOAD] = ArrayRecord({"upload": sent.contiguous()})
