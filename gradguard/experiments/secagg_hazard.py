"""The abstention hazard under secure aggregation, and the cover defence (issue 10, item 4).

Model inconsistency (Pasquini et al., CCS 2022, section 4): the target gets the attack's
model, every other client a model whose last layers are zero. Each guarded non-target flags
its model (``health.constant-output``). What it then does decides what the secure sum is:

- ``train`` (unguarded): it trains on the zeroed model; its update is its output bias alone;
- ``drop`` (guarded, today's abstention): it leaves the round; the sum loses it;
- ``cover`` (guarded, :class:`gradguard.fl.cover.SecureRefusal`): it stays in the round
  and masks a fresh noise cover.

The target here runs no Guard and receives the inner imprint model: a stand-in for a target
that cannot see the attack (in Pasquini et al.'s own setting it receives the honest model
and the server inverts its update passively; the imprint decoder lets this round count
images). Each case reports the cosine between the aggregate the server derives and the
target's own update, and the target's images recovered at >= ``threshold_db``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gradguard.attacks import get_attack
from gradguard.attacks.base import ServerAttack
from gradguard.attacks.inversion.analytic import invert_rows
from gradguard.bench.campaign import sum_updates
from gradguard.bench.scoring import score_leak
from gradguard.data import Dataset, train_test
from gradguard.detect import Guard
from gradguard.fl import LocalTraining, local_update
from gradguard.fl.cover import SecureRefusal, cover_update
from gradguard.fl.guarded import ClientGuard
from gradguard.fl.update import Update
from gradguard.models import build_model

BEHAVIOURS = ("train", "drop", "cover")


@dataclass(frozen=True)
class HazardConfig:
    dataset: str = "digits"
    model: str = "mlp"
    clients: int = 4
    batch_size: int = 16
    lr: float = 0.05
    target: int = 0
    threshold_db: float = 30.0
    seed: int = 0
    amplify: float = 1.0  # the adaptive server's gain on the target's imprint gradient
    disguise: str = "fc2"  # how the gain is applied (DISGUISES)
    honest_target: bool = False  # the target gets the honest model (Pasquini et al.)
    refusal: SecureRefusal = field(default_factory=SecureRefusal)


@dataclass
class HazardRound:
    """One inconsistency round: what each client receives and holds."""

    cfg: HazardConfig
    attack: ServerAttack
    template: nn.Module
    aux: Dataset
    batches: dict[int, Dataset]
    sent: dict[int, nn.Module]
    secrets: Any
    training: LocalTraining

    def update(self, c: int, model: nn.Module | None = None) -> Update:
        """Client ``c``'s update on ``model`` (default: what it was sent); fixed seed."""
        gen = torch.Generator().manual_seed(self.cfg.seed + c)
        return local_update(model or self.sent[c], self.batches[c], self.training, gen, c)

    def cover(self, c: int, generator: torch.Generator | None = None) -> Update:
        """Client ``c``'s cover: noise shaped on its honest update on its reference model
        (here its initial model: nothing was accepted before this round)."""
        return cover_update(self.update(c, self.template), self.cfg.refusal.scale, generator)

    def verdicts(self) -> dict[int, tuple[bool, str]]:
        """Each client's default-Guard verdict on what it was sent: (flagged, summary)."""
        out = {}
        for c, model in self.sent.items():
            check = ClientGuard(Guard(template=copy.deepcopy(self.template), data=self.batches[c]))
            verdict, allowed = check.review(model.state_dict())
            out[c] = (not allowed, verdict.summary())
        return out


def _top_k(weight: torch.Tensor, k: int, right: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` replaced by a rank-``k`` matrix of the same norm with equal singular values:
    its top ``k`` left singular vectors and right vectors ``right`` (k x in; default its own
    top ``k``)."""
    u, _s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    m = u[:, :k] @ (vh[:k] if right is None else right.double())
    return (m * weight.double().norm() / m.norm()).to(weight.dtype)


def _amplify_fc2(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    fc2.weight.mul_(a)


def _spread(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    fc2.weight.mul_(math.sqrt(a))
    head.weight.mul_(math.sqrt(a))


def _head(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    head.weight.mul_(a)


def _head_bias(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    head.bias.mul_(a)


def _shrink_fc1(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    # ReLU(z / a) = ReLU(z) / a: the same function, fc1's gradient x a
    fc1.weight.div_(a)
    fc1.bias.div_(a)
    fc2.weight.mul_(a)


def _shrink_head(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    # the same function; fc1's gradient passes through fc2 x a and head / a: unchanged
    fc2.weight.mul_(a)
    fc2.bias.mul_(a)
    head.weight.div_(a)


def _aligned(rank: int) -> Callable[[nn.Linear, nn.Linear, nn.Linear, float], None]:
    """fc2 and head rank ``rank`` at their own norms, head reading fc2's top output
    directions, then each x sqrt(a): the norm-preserving way to raise the gain back to fc1
    (the Jacobian's operator norm grows while the weights' norms do not)."""

    def apply(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
        fc2.weight.copy_(_top_k(fc2.weight, rank) * math.sqrt(a))
        out = torch.linalg.svd(fc2.weight.double(), full_matrices=False)[0][:, :rank]
        head.weight.copy_(_top_k(head.weight, rank, out.T) * math.sqrt(a))

    return apply


def _aligned_noisy(fc1: nn.Linear, fc2: nn.Linear, head: nn.Linear, a: float) -> None:
    """Rank one as ``aligned``, plus Gaussian noise of 20% (fc2) and 50% (head) of the
    entries' RMS, norms kept: the parallel rows the signature checks see are broken up."""
    g = torch.Generator().manual_seed(0)
    n2, nh = fc2.weight.norm(), head.weight.norm()
    w2 = _top_k(fc2.weight, 1)
    out = torch.linalg.svd(w2.double(), full_matrices=False)[0][:, :1]
    wh = _top_k(head.weight, 1, out.T)
    for layer, w, norm, noise in ((fc2, w2, n2, 0.2), (head, wh, nh, 0.5)):
        w = w + noise * w.norm() / math.sqrt(w.numel()) * torch.randn(w.shape, generator=g)
        layer.weight.copy_(w * norm / w.norm() * math.sqrt(a))


#: The adaptive server's ways to apply a gain ``a`` to the target's ``mlp`` (fc1, fc2, head).
DISGUISES: dict[str, Callable[[nn.Linear, nn.Linear, nn.Linear, float], None]] = {
    "fc2": _amplify_fc2,  # the layer after the imprint x a
    "spread": _spread,  # fc2 and head x sqrt(a) each
    "head": _head,  # the head's weights x a
    "head-bias": _head_bias,  # the head's bias x a
    "shrink-fc1": _shrink_fc1,  # fc1 / a, fc2 x a: the same function
    "shrink-head": _shrink_head,  # fc2 x a, head / a: the same function
    "aligned": _aligned(1),  # fc2 and head rank one at their own norms, x sqrt(a) each
    "aligned-4": _aligned(4),  # the same at rank 4 (no parallel rows)
    "aligned-noisy": _aligned_noisy,  # rank one plus noise
}


def amplified(model: nn.Module, gain: float, disguise: str = "fc2") -> nn.Module:
    """A copy of ``model`` (an ``mlp``: fc1, fc2, head) with ``gain`` applied by
    ``disguise``. The layer after the imprint scaled (``fc2``): the imprint rows' gradient
    grows by the gain, which the bin differences divide out (their ratio is unchanged)."""
    if disguise not in DISGUISES:
        raise ValueError(f"disguise must be one of {tuple(DISGUISES)}")
    out = copy.deepcopy(model)
    fc1, fc2, head = [m for m in out.modules() if isinstance(m, nn.Linear)][:3]
    with torch.no_grad():
        DISGUISES[disguise](fc1, fc2, head, gain)
    return out


def prepare(cfg: HazardConfig = HazardConfig()) -> HazardRound:
    """The round of ``gradguard attack inconsistency`` (same data, model, batches and seed)."""
    attack = get_attack("inconsistency", batch_size=cfg.batch_size, target=cfg.target)
    train, aux = train_test(cfg.dataset)
    torch.manual_seed(cfg.seed)
    template = build_model(
        cfg.model, train.image_shape, train.num_classes, None, **attack.model_kwargs(cfg.model)
    )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    b = cfg.batch_size
    batches = {c: train.subset(order[c * b : (c + 1) * b]) for c in range(cfg.clients)}
    sent, secrets = attack.manipulate_clients(copy.deepcopy(template), aux, list(batches))
    if cfg.honest_target:
        sent[cfg.target] = copy.deepcopy(template)
    if cfg.amplify != 1.0 or cfg.disguise != "fc2":
        sent[cfg.target] = amplified(sent[cfg.target], cfg.amplify, cfg.disguise)
    training = LocalTraining(batch_size=b, lr=cfg.lr, fedsgd=True)
    return HazardRound(cfg, attack, template, aux, batches, sent, secrets, training)


def row_decode(r: HazardRound, aggregate: Update) -> torch.Tensor:
    """The per-row decoder ``dW_i / db_i`` on the first linear layer of ``aggregate`` (the
    target's own honest exposure, seed 000 A.1.1), as images."""
    first = [n for n, m in r.template.named_modules() if isinstance(m, nn.Linear)][0]
    delta = aggregate.as_delta()
    rows, _ = invert_rows(delta[f"{first}.weight"], delta[f"{first}.bias"])
    return rows.clamp(0, 1).view(-1, *r.batches[r.cfg.target].x.shape[1:])


def score(r: HazardRound, aggregate: Update | None) -> dict[str, Any]:
    """Cosine of ``aggregate`` to the target's update; images recovered from it, scored
    against the target's batch and (for the covers) every other client's."""
    t = r.cfg.target
    if aggregate is None:
        return {"completed": False, "cosine": None, "target_leaked": 0, "target_psnr": None}
    cos = round(aggregate.cosine(r.update(t)), 4)
    if r.cfg.honest_target:  # no imprint: the per-row decoder dW_i / db_i on fc1
        leak = score_leak(t, r.batches[t].x, row_decode(r, aggregate), r.cfg.threshold_db)
        return {
            "completed": True,
            "cosine": cos,
            "target_leaked": leak.leaked,
            "target_psnr": round(leak.psnr_mean, 2),
        }
    recon = r.attack.reconstruct_sum(aggregate, list(r.sent), r.secrets)[t]
    leak = score_leak(t, r.batches[t].x, recon.images, r.cfg.threshold_db)
    others = sum(
        score_leak(c, r.batches[c].x, recon.images, r.cfg.threshold_db).leaked
        for c in r.batches
        if c != t
    )
    return {
        "completed": True,
        "cosine": cos,
        "target_leaked": leak.leaked,
        "target_psnr": round(leak.psnr_mean, 2),
        "others_leaked": others,
    }


def inprocess_case(
    r: HazardRound,
    behaviour: str,
    repeats: int = 1,
    seed: int | None = None,
    guarded: int | None = None,
) -> dict[str, Any]:
    """The weighted-mean delta the secure sum reveals (gradguard's in-process secure
    aggregation reveals exactly this), averaged over ``repeats`` identical attacked rounds
    (an attacker repeating the round; each cover is drawn fresh). ``guarded``: only that
    many non-targets run the Guard and refuse by ``behaviour``, the others train on what
    they receive (default: every non-target). ``seed``: seeds the covers, for a
    reproducible run (a real client draws them from the OS)."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}")
    t = r.cfg.target
    others = [c for c in r.batches if c != t]
    refusing = set(others[: len(others) if guarded is None else guarded])
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    rounds = []
    for _ in range(repeats):
        updates = [r.update(t)]
        for c in others:
            if behaviour == "train" or c not in refusing:
                updates.append(r.update(c))
            elif behaviour == "cover":
                updates.append(r.cover(c, gen))
        rounds.append(sum_updates(updates))
    first = rounds[0]
    keys = list(first.as_delta())
    mean = {k: sum(u.as_delta()[k].double() for u in rounds) / repeats for k in keys}
    aggregate = Update(
        {k: v.float() for k, v in mean.items()}, first.num_examples, 1, first.lr, "delta"
    )
    return {
        "engine": "inprocess",
        "non_targets": behaviour,
        "refusing": 0 if behaviour == "train" else len(refusing),
        "repeats": repeats,
        **score(r, aggregate),
    }


class SybilClient:
    """A client the server controls: it returns the model it receives (a zero update), so
    the server knows its share of the sum; weight ``examples``."""

    def __init__(self, pid: int, examples: int = 1) -> None:
        self.pid, self.examples = pid, examples

    def client(self):
        from flwr.client import NumPyClient

        pid, examples = self.pid, self.examples

        class _Sybil(NumPyClient):
            def get_properties(self, config):
                return {"partition-id": pid}

            def fit(self, parameters, config):
                return parameters, examples, {}

        return _Sybil()


class _RoundCampaign:
    """The Campaign face :class:`SecAggCampaignFedAvg` needs, sending exactly ``r``'s models
    (amplified or honest target included; a sybil gets a non-target's zeroed model) and
    keeping the aggregate it receives (``score`` decodes it)."""

    def __init__(self, r: HazardRound) -> None:
        self.r = r

    def models_for(self, rnd: int, global_model: nn.Module, clients) -> dict[int, nn.Module]:
        zeroed = next(m for c, m in self.r.sent.items() if c != self.r.cfg.target)
        return {c: self.r.sent.get(c, zeroed) for c in clients}

    def recover(self, rnd: int, updates=None, aggregate=None) -> list:
        return []


def flower_case(
    r: HazardRound,
    behaviour: str,
    threshold: int | float = 1.0,
    sybil: bool = False,
) -> dict[str, Any]:
    """The round through Flower's SecAgg+ at the attacker's precision settings (clipping
    1.25 x the largest parameter sent, Q = 2^30, ``max_weight`` = the batch) and
    reconstruction ``threshold``; ``sybil``: the server adds one client of its own."""
    from gradguard.integrations.flower.secagg import (
        SecAggCampaignFedAvg,
        SecAggSettings,
        _BatchClient,
        largest_parameter,
        run_secagg,
    )
    from gradguard.integrations.flower.secagg_client import GuardedSecAggClient

    cfg = r.cfg
    largest = largest_parameter(m.state_dict() for m in r.sent.values())
    settings = SecAggSettings(
        clipping_range=1.25 * largest,
        quantization_range=2**30,
        modulus_range=2**40,
        max_weight=cfg.batch_size,
        reconstruction_threshold=threshold,
    )
    sybil_pid = cfg.clients
    nodes = cfg.clients + (1 if sybil else 0)
    refusal = replace(cfg.refusal, mode="drop" if behaviour == "drop" else "cover")
    template, batches, training = r.template, r.batches, r.training

    def make_client(pid: int, context=None):
        if pid == sybil_pid:
            return SybilClient(pid).client()
        if pid == cfg.target or behaviour == "train":
            return _BatchClient(template, batches[pid], training, pid, cfg.seed)
        check = ClientGuard(Guard(template=copy.deepcopy(template), data=batches[pid]))
        return GuardedSecAggClient(template, batches[pid], training, pid, check, refusal, cfg.seed)

    campaign = _RoundCampaign(r)
    weights = {c: cfg.batch_size for c in batches} | ({sybil_pid: 1} if sybil else {})
    strategy = SecAggCampaignFedAvg(
        template,
        campaign,
        weights,
        1,
        cfg.lr,
        min_fit_clients=nodes,
        min_available_clients=nodes,
    )
    run_secagg(
        strategy, template, batches, training, settings, seed=cfg.seed,
        make_client=make_client, nodes=nodes,
    )  # fmt: skip
    aggregate = strategy.aggregates.get(1)
    row = {
        "engine": "flower-secagg+",
        "non_targets": behaviour,
        "threshold": threshold,
        "sybil": sybil,
        "repeats": 1,
        **score(r, aggregate),
    }
    return row


__all__ = [
    "BEHAVIOURS",
    "DISGUISES",
    "amplified",
    "row_decode",
    "HazardConfig",
    "HazardRound",
    "SybilClient",
    "flower_case",
    "inprocess_case",
    "prepare",
]
