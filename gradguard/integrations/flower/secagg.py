"""A malicious server behind Flower's own SecAgg+ (Bell et al. 2020; Flower 1.41 legacy API).

The clients run ``flwr.client.mod.secaggplus_mod``: each clips its trained parameters to
``clipping_range``, scales them by its example weight, quantises them stochastically to
``quantization_range`` levels and masks them; the server runs ``SecAggPlusWorkflow`` and
learns only the weighted mean of the clients' trained parameters. :class:`SecAggCampaignFedAvg`
is Flower's legacy FedAvg whose ``configure_fit`` sends each client the model the bench's
:class:`~gradguard.bench.campaign.Campaign` chooses (one per client for a ``per_client``
attack) and whose ``aggregate_fit`` subtracts the weighted mean of what it sent from that
aggregate and hands the campaign the resulting mean delta: what a secure-sum attack reads.
The SecAgg+ parameters are the server's to choose (an attacker picks a narrow clipping range
and a fine quantisation); :class:`SecAggSettings` holds them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Context,
    FitIns,
    GetPropertiesIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from torch import nn

from gradguard.bench.campaign import Campaign
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.fl.update import Update


@dataclass(frozen=True)
class SecAggSettings:
    """``SecAggPlusWorkflow``'s parameters; the defaults are Flower 1.41's. Flower rounds
    quantised values through int32, so ``quantization_range`` must stay below 2^31.
    ``clipping_range <= 0``: the attacker's choice, 1.25 x the largest |parameter| it sends
    among those its decoder reads (``clip_to="decoded"``: the attack's ``decoded_keys``, all
    where it names none; the other parameters are clipped, which costs the attacker nothing)
    or among all (``clip_to="all"``)."""

    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    max_weight: float = 1000.0
    num_shares: float = 1.0  # a fraction of the sampled clients
    reconstruction_threshold: float = 1.0
    clip_to: str = "decoded"  # "decoded" or "all", for clipping_range <= 0


def largest_parameter(
    states: Iterable[Mapping[str, torch.Tensor]], keys: Iterable[str] = ()
) -> float:
    """The largest |value| among the floating-point tensors of ``states`` (only ``keys``,
    where any are named): the attacker's clipping range is sized to it."""
    keys = set(keys)
    return max(
        float(v.abs().max())
        for state in states
        for k, v in state.items()
        if v.is_floating_point() and v.numel() and (not keys or k in keys)
    )


def _arrays(state: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in state.values()]


def _state(template: nn.Module, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """``arrays`` as ``template``'s state; shapes and finiteness checked (hostile input)."""
    like = template.state_dict()
    if len(arrays) != len(like):
        raise GradguardError(f"{len(arrays)} arrays for a model of {len(like)} entries")
    out = {}
    for (k, v), a in zip(like.items(), arrays, strict=True):
        t = torch.as_tensor(np.asarray(a)).to(v.dtype)
        if t.shape != v.shape or (t.is_floating_point() and not torch.isfinite(t).all()):
            raise GradguardError(f"entry {k}: expected finite {tuple(v.shape)}")
        out[k] = t
    return out


class SecAggCampaignFedAvg(FedAvg):
    """Legacy FedAvg playing ``campaign`` through SecAgg+ (``weights``: each partition's
    example count, which the server knows from the round's configuration)."""

    def __init__(
        self,
        template: nn.Module,
        campaign: Campaign,
        weights: Mapping[int, int],
        local_steps: int,
        lr: float,
        **fedavg: Any,
    ) -> None:
        state = template.state_dict()
        super().__init__(
            fraction_evaluate=0.0,
            initial_parameters=ndarrays_to_parameters(_arrays(state)),
            **fedavg,
        )
        self.template, self.campaign, self.weights = template, campaign, dict(weights)
        self.local_steps, self.lr = local_steps, lr
        self.partition_of: dict[int, int] = {}
        self.sent: dict[int, dict[str, torch.Tensor]] = {}  # partition -> state sent
        self.aggregates: dict[int, Update] = {}

    def configure_fit(self, server_round, parameters, client_manager):
        fit = super().configure_fit(server_round, parameters, client_manager)
        for proxy, _ in fit:
            if proxy.node_id not in self.partition_of:
                props = proxy.get_properties(GetPropertiesIns({}), timeout=600, group_id=None)
                self.partition_of[proxy.node_id] = int(props.properties["partition-id"])
        pids = [self.partition_of[p.node_id] for p, _ in fit]
        model = copy.deepcopy(self.template)
        model.load_state_dict(_state(self.template, parameters_to_ndarrays(parameters)))
        models = self.campaign.models_for(server_round, model, pids)
        honest = model.state_dict()
        self.sent = {pid: models[pid].state_dict() if pid in models else honest for pid in pids}
        # FedAvg hands every client the same FitIns object: each gets its own here
        return [
            (proxy, FitIns(ndarrays_to_parameters(_arrays(self.sent[pid])), dict(ins.config)))
            for (proxy, ins), pid in zip(fit, pids, strict=True)
        ]

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        aggregate = _state(self.template, parameters_to_ndarrays(results[0][1].parameters))
        # SecAgg+ averages over the clients still active after masking: a client that
        # dropped out is not in the mean, so its model is not subtracted either
        active = {self.partition_of[proxy.node_id] for proxy, _ in results}
        sent = {p: s for p, s in self.sent.items() if p in active}
        total = sum(self.weights[p] for p in sent)
        delta = {
            k: (
                aggregate[k].double()
                - sum(self.weights[p] * s[k].double() for p, s in sent.items()) / total
            ).float()
            for k, v in aggregate.items()
            if v.is_floating_point()
        }
        update = Update(delta, total, self.local_steps, self.lr, "delta")
        self.aggregates[server_round] = update
        self.campaign.recover(server_round, aggregate=update)
        return super().aggregate_fit(server_round, results, failures)


def server_app(strategy: SecAggCampaignFedAvg, settings: SecAggSettings, rounds: int = 1):
    app = ServerApp()

    @app.main()
    def main(grid, context: Context) -> None:
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
        )
        workflow = SecAggPlusWorkflow(
            num_shares=settings.num_shares,
            reconstruction_threshold=settings.reconstruction_threshold,
            max_weight=settings.max_weight,
            clipping_range=settings.clipping_range,
            quantization_range=settings.quantization_range,
            modulus_range=settings.modulus_range,
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    return app


class _BatchClient(NumPyClient):
    """An honest client: trains the model it receives on its batch, returns the result."""

    def __init__(
        self, template: nn.Module, batch: Dataset, training: LocalTraining, pid: int, seed: int
    ) -> None:
        self.template, self.batch, self.training, self.pid = template, batch, training, pid
        self.seed = seed

    def get_properties(self, config):
        return {"partition-id": self.pid}

    def _train(self, state: Mapping[str, torch.Tensor]) -> Update:
        """This client's local training from ``state`` (its seed: ``seed + pid``)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(state)
        gen = torch.Generator().manual_seed(self.seed + self.pid)
        return local_update(model, self.batch, self.training, gen, self.pid)

    def fit(self, parameters, config):
        received = _state(self.template, parameters)
        trained = _plus(received, self._train(received).as_delta())
        return _arrays(trained), len(self.batch), {}


def _plus(
    state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` moved by ``delta`` where it has an entry (the parameters a client sends)."""
    return {k: v + delta[k] if k in delta else v for k, v in state.items()}


def client_app(
    template: nn.Module,
    batches: Mapping[int, Dataset],
    training: LocalTraining,
    seed: int = 0,
    make_client: Callable[[int, Context], NumPyClient] | None = None,
):
    """Honest clients behind ``secaggplus_mod``; ``make_client(partition, context)``, when
    given, builds each partition's client instead (a guarded one, say)."""

    def client_fn(context: Context):
        pid = int(context.node_config["partition-id"])
        if make_client is not None:
            return make_client(pid, context).to_client()
        return _BatchClient(template, batches[pid], training, pid, seed).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def run_secagg(
    strategy: SecAggCampaignFedAvg,
    template: nn.Module,
    batches: Mapping[int, Dataset],
    training: LocalTraining,
    settings: SecAggSettings,
    rounds: int = 1,
    seed: int = 0,
    make_client: Callable[[int, Context], NumPyClient] | None = None,
    nodes: int | None = None,
    log_level: int = logging.WARNING,
) -> SecAggCampaignFedAvg:
    """One SecAgg+ federation of ``len(batches)`` clients (``nodes``, when given: that many,
    each built by ``make_client``) in Flower's simulation engine."""
    from gradguard.integrations.flower.simulation import (
        ray_session,
        simulate,
        warnings_silenced,
    )

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(log_level)
    try:
        with ray_session(), warnings_silenced():
            simulate(
                server_app(strategy, settings, rounds),
                client_app(template, batches, training, seed, make_client),
                nodes or len(batches),
            )
    finally:
        flwr_logger.setLevel(level)
    return strategy


def attack_through_secagg(
    attack_name: str,
    settings: SecAggSettings,
    dataset: str = "digits",
    model: str = "convnet",
    clients: int = 3,
    batch_size: int = 16,
    local_steps: int = 1,
    lr: float = 0.05,
    seed: int = 0,
    psnr_threshold: float = 30.0,
    **attack_options: Any,
) -> dict[str, Any]:
    """The round of :func:`gradguard.bench.attack_round.run_attack` (same data, model and
    batches for the same seed), run through Flower SecAgg+; returns the leak summary."""
    import inspect
    import math

    from gradguard.attacks import attack_class, get_attack
    from gradguard.data import train_test
    from gradguard.models import build_model

    if "clients" in inspect.signature(attack_class(attack_name)).parameters:
        attack_options.setdefault("clients", clients)
    attack = get_attack(attack_name, batch_size=batch_size, **attack_options)
    train, aux = train_test(dataset)
    torch.manual_seed(seed)
    template = build_model(
        model, train.image_shape, train.num_classes, None, **attack.model_kwargs(model)
    )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    batches = {
        c: train.subset(order[c * batch_size : (c + 1) * batch_size]) for c in range(clients)
    }
    campaign = Campaign(attack, (1,), None, aux, {c: b.x for c, b in batches.items()})
    decoded: tuple[str, ...] = ()
    if settings.clipping_range <= 0:
        sent, secrets = attack.manipulate_clients(copy.deepcopy(template), aux, list(batches))
        if settings.clip_to not in ("decoded", "all"):
            raise GradguardError(f"clip_to must be 'decoded' or 'all', got {settings.clip_to!r}")
        decoded = tuple(attack.decoded_keys(secrets))
        clip_keys = decoded if settings.clip_to == "decoded" else ()
        largest = largest_parameter((m.state_dict() for m in sent.values()), clip_keys)
        settings = replace(settings, clipping_range=1.25 * largest)
    campaign.threshold_db = psnr_threshold
    if local_steps == 1:
        training = LocalTraining(batch_size=batch_size, lr=lr, fedsgd=True)
    else:
        training = LocalTraining(
            batch_size=math.ceil(batch_size / local_steps), lr=lr, steps=local_steps
        )
    strategy = SecAggCampaignFedAvg(
        template,
        campaign,
        {c: batch_size for c in batches},
        local_steps,
        lr,
        min_fit_clients=clients,
        min_available_clients=clients,
    )
    run_secagg(strategy, template, batches, training, settings, seed=seed)
    leaks = campaign.leaks.get(1, [])
    aggregate = strategy.aggregates.get(1)
    cosine = cosine_decoded = None
    if aggregate is not None and leaks:
        # the first reconstructed client's own update, recomputed as it trained
        c = leaks[0].client_id
        model = copy.deepcopy(template)
        model.load_state_dict(strategy.sent[c])
        own = local_update(model, batches[c], training, torch.Generator().manual_seed(seed + c), c)
        cosine = aggregate.cosine(own, list(aggregate.values))
        if decoded:
            cosine_decoded = aggregate.cosine(own, [k for k in aggregate.values if k in decoded])
    return {
        "attack": attack_name,
        "engine": "flower-secagg+",
        "clients": clients,
        "batch_size": batch_size,
        "local_steps": local_steps,
        "settings": settings.__dict__,
        "leaked_fraction": round(
            sum(k.leaked for k in leaks) / (clients * batch_size) if leaks else 0.0, 4
        ),
        "leaked": {str(k.client_id): k.leaked for k in leaks},
        "psnr_mean": round(float(np.mean([k.psnr_mean for k in leaks])) if leaks else 0.0, 2),
        "aggregate_cosine_to_target": None if cosine is None else round(cosine, 6),
        # over the decoded parameters alone (the others are clipped when the clipping range
        # is sized to the decoded ones)
        "aggregate_cosine_decoded": None if cosine_decoded is None else round(cosine_decoded, 6),
        "aggregate": aggregate,
        "sent": strategy.sent,
    }


__all__ = [
    "attack_through_secagg",
    "SecAggCampaignFedAvg",
    "SecAggSettings",
    "client_app",
    "largest_parameter",
    "run_secagg",
    "server_app",
]
