"""Peers' images from the change of the global model (seed 001, Yue et al. sec. 4; the
predecessor "curious client", Wilson et al. arXiv 2410.04661, inverts the same difference).

The client knows the global state before a round, the state after it, and its own upload.
:func:`peer_view` says what the change is made of under the server's rule: under the mean,
the sum of the peers' updates once the client's own share is subtracted; under Krum, one
peer's update whole (the client dropped itself by a Byzantine upload, or was not chosen);
under Multi-Krum, the mean of the chosen updates; under the median and trimmed mean, not a
sum of updates at all, approximated by the peers' mean.

:func:`invert_peers` then optimises dummy images so that FedAvg on them (``local_steps``
full-batch SGD steps from the known global state, clipped like DP clients clip, combined as
the view says) reproduces that change: cosine distance plus total variation, signed Adam and
a [0, 1] box as in Inverting Gradients (Geiping et al. 2020, sec. 4). Labels come from the
head bias change (class counts, :func:`gradguard.attacks.inversion.labels.label_counts`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from gradguard.attacks.base import Reconstruction
from gradguard.attacks.client.curious import FederationKnowledge, Observation
from gradguard.attacks.inversion.inverting import total_variation
from gradguard.attacks.inversion.labels import label_counts, labels_from_counts, last_linear
from gradguard.errors import GradguardError


@dataclass(frozen=True)
class PeerView:
    """The observed ``target`` equals ``combine`` (sum or mean) of ``peers`` simulated peer
    updates, each of ``examples`` images."""

    target: torch.Tensor
    peers: int
    combine: Literal["sum", "mean"]
    examples: int


@dataclass(frozen=True)
class PeerInversionConfig:
    iterations: int = 300
    lr: float = 0.1
    tv: float = 1e-4
    seed: int = 0


def peer_view(obs: Observation, know: FederationKnowledge) -> PeerView | None:
    """What the global change of ``obs`` is, as a function of peers' updates; None when it
    holds nothing of the peers (Krum chose the client's own upload)."""
    change = obs.global_change() / know.server_lr
    own, n, b = obs.upload, know.clients, know.peer_examples
    honest = obs.upload_kind == "honest"
    if know.aggregator == "mean":
        # equal example counts: the mean of n uploads, the client's own among them
        return PeerView(n * change - own, n - 1, "sum", b)
    if know.aggregator == "krum":
        if (change - own).norm() <= 1e-6 * max(float(own.norm()), 1e-12):
            return None
        return PeerView(change, 1, "sum", b)
    if know.aggregator == "multikrum":
        chosen = max(1, n - know.byzantine)
        if honest and chosen > 1:  # assume its own honest upload was among the chosen
            return PeerView(chosen * change - own, chosen - 1, "sum", b)
        return PeerView(change, min(chosen, n - 1), "mean", b)
    if know.aggregator in ("median", "trimmed"):
        return PeerView(change, n - 1, "mean", b)
    raise GradguardError(f"no peer view for aggregator {know.aggregator!r}")


def recover_peer_labels(
    view: PeerView, know: FederationKnowledge, model: nn.Module, mean_probs: torch.Tensor
) -> torch.Tensor:
    """Labels of all ``peers * examples`` images from the head bias change: per step the
    mean bias gradient of class j is ``mean_p_j - n_j / N`` (see :mod:`...labels`)."""
    head, layer = last_linear(model)
    if layer.bias is None:
        raise GradguardError("label recovery needs a head with a bias")
    keys = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    offset = 0
    for k in keys:
        size = model.state_dict()[k].numel()
        if k == f"{head}.bias":
            break
        offset += size
    bias_change = view.target[offset : offset + layer.out_features]
    per_peer = bias_change / (view.peers if view.combine == "sum" else 1)
    gradient = -per_peer / (know.lr * know.local_steps)
    total = view.peers * view.examples
    counts = label_counts({f"{head}.bias": gradient}, total, head, mean_probs)
    return labels_from_counts(counts)


def simulate_updates(
    net: nn.Module,
    start: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    view: PeerView,
    know: FederationKnowledge,
    keys: list[str],
) -> torch.Tensor:
    """FedAvg of each peer on its images from ``start`` (differentiable), clipped to the DP
    bound, combined as ``view`` says; one flat vector in ``keys`` order."""
    params = dict(net.named_parameters())
    total = None
    for p in range(view.peers):
        sl = slice(p * view.examples, (p + 1) * view.examples)
        w = {k: start[k].detach().requires_grad_(True) for k in params}
        for _ in range(know.local_steps):
            loss = F.cross_entropy(functional_call(net, w, (images[sl],)), labels[sl])
            grads = torch.autograd.grad(loss, list(w.values()), create_graph=True)
            w = {k: v - know.lr * g for (k, v), g in zip(w.items(), grads, strict=True)}
        flat = torch.cat(
            [
                (w[k] - start[k]).flatten() if k in w else start[k].new_zeros(start[k].numel())
                for k in keys
            ]
        )
        if know.dp_clip is not None:
            flat = flat * torch.clamp(know.dp_clip / (flat.norm() + 1e-12), max=1.0)
        total = flat if total is None else total + flat
    return total if view.combine == "sum" else total / view.peers


def invert_peers(
    model: nn.Module,
    obs: Observation,
    know: FederationKnowledge,
    image_shape: tuple[int, ...],
    mean_probs: torch.Tensor,
    config: PeerInversionConfig = PeerInversionConfig(),
) -> Reconstruction:
    """Reconstruct the peers' images behind ``obs`` (empty when the change holds none).

    ``image_shape`` and ``mean_probs`` (the model's mean softmax, for label counts) come from
    the client's own data.
    """
    start_time = time.perf_counter()
    net = copy.deepcopy(model)
    net.load_state_dict(obs.before, strict=False)
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    view = peer_view(obs, know)
    shape = tuple(image_shape)
    if view is None:
        empty = torch.zeros((0, *shape))
        return Reconstruction(empty, None, {"view": "own upload chosen", "seconds": 0.0})
    labels = recover_peer_labels(view, know, net, mean_probs)
    start = {k: v.detach() for k, v in obs.before.items()}
    target = view.target.detach()
    g = torch.Generator().manual_seed(config.seed)
    x = torch.rand((len(labels), *shape), generator=g).mul_(0.5).add_(0.25).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.lr)
    milestones = [int(config.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    loss_value = float("nan")
    for _ in range(config.iterations):
        opt.zero_grad()
        sim = simulate_updates(net, start, x, labels, view, know, obs.keys)
        loss = 1 - F.cosine_similarity(sim, target, dim=0) + config.tv * total_variation(x)
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        loss_value = float(loss.detach())
    info = {
        "view": f"{view.combine} of {view.peers} peer update(s)",
        "peers": view.peers,
        "loss": loss_value,
        "seconds": time.perf_counter() - start_time,
    }
    return Reconstruction(x.detach(), labels, info)
