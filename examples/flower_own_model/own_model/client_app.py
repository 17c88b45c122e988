"""The ClientApp: the user's own training code, with gradguard's mod in front of it."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from gradguard.integrations.flower.mod import guard_mod
from own_model.task import Net, evaluate, load_data, train


def _data(context: Context):
    return load_data(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )


def _guard(context: Context):
    # the Guard checks every received model against the client's own model and data
    return _data(context)[0]  # a TensorDataset, as the client has it


def make_app(guarded: bool = True) -> ClientApp:
    """The client app, with gradguard's mod (``guarded``) or without it."""
    mods = [guard_mod(lambda _ctx: Net(), _guard)] if guarded else []
    app = ClientApp(mods=mods)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model = Net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        trainset, _ = _data(context)
        seed = (
            1000 * int(msg.content["config"]["server-round"]) + context.node_config["partition-id"]
        )
        loss = train(model, trainset, seed=seed)
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(trainset)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        model = Net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        _, testset = _data(context)
        loss, acc = evaluate(model, testset)
        metrics = MetricRecord({"eval_loss": loss, "eval_acc": acc, "num-examples": len(testset)})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


app = make_app()
