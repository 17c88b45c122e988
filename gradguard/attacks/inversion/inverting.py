"""Inverting Gradients (Geiping et al., NeurIPS 2020): optimise dummy images to match a gradient.

The distance is ``1 - cos(grad(dummy), grad(target))`` over all matched parameters at once
plus ``tv * TV(dummy)``; Adam (step 0.1, signed gradients, step decayed by 10 at 3/8, 5/8 and
7/8 of the iterations) and a box constraint to [0, 1] (clamped after every step), as in the
paper (sec. 4). Labels come from the last-layer gradient (:mod:`.labels`). :func:`invert` is
the engine; DLG/iDLG (:mod:`.dlg`) and fishing (:mod:`gradguard.attacks.server.fishing`)
call it with other settings.

Protocols: FedSGD exactly. A FedAvg delta after E steps is treated as one gradient
(``Update.as_gradient()``, the sum of the step gradients), which is close for small E and
small learning rates (Geiping et al. sec. 5 invert multi-step updates this way only roughly).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.labels import last_linear, mean_softmax, recover_labels
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update


@dataclass(frozen=True)
class InversionConfig:
    """Settings of the gradient-matching optimisation."""

    iterations: int = 500
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 1
    distance: Literal["cosine", "l2"] = "cosine"
    optimizer: Literal["adam", "lbfgs"] = "adam"
    signed: bool = True  # Adam on the sign of the gradient (Geiping et al.)
    decay: bool = True
    boxed: bool = True
    soft_labels: bool = False  # optimise label logits too (DLG)
    seed: int = 0


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (anisotropic TV)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def _selected(
    gradient: dict[str, torch.Tensor], names: list[str], mask: dict[str, torch.Tensor] | None
) -> list[torch.Tensor]:
    out = []
    for n in names:
        g = gradient[n]
        out.append(g[mask[n]] if mask is not None and n in mask else g)
    return out


def gradient_distance(a: list[torch.Tensor], b: list[torch.Tensor], kind: str) -> torch.Tensor:
    """``1 - cosine`` over all tensors together, or the summed squared L2 distance."""
    if kind == "l2":
        return sum(((x - y) ** 2).sum() for x, y in zip(a, b, strict=True))
    dot = sum((x * y).sum() for x, y in zip(a, b, strict=True))
    na = sum((x * x).sum() for x in a).sqrt()
    nb = sum((y * y).sum() for y in b).sqrt()
    return 1 - dot / (na * nb + 1e-12)


def invert(
    model: nn.Module,
    gradient: dict[str, torch.Tensor],
    labels: torch.Tensor | None,
    shape: tuple[int, ...],
    config: InversionConfig = InversionConfig(),
    mask: dict[str, torch.Tensor] | None = None,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Images (N x C x H x W in [0, 1]) whose gradient on ``model`` matches ``gradient``.

    ``shape`` is ``(N, C, H, W)``; ``labels`` (N) are fixed, or ``None`` with
    ``config.soft_labels`` to optimise them (DLG). ``mask`` selects entries of some
    parameters' gradients (e.g. one row of the head); parameters absent from ``gradient``
    are ignored. Returns the images and ``{"gradient_loss", "restart", "labels"}``.
    """
    net = copy.deepcopy(model)
    net.train()  # the client computes its gradient in training mode (batch-norm statistics)
    names = [n for n, _ in net.named_parameters() if n in gradient]
    if not names:
        raise GradguardError("the update shares no parameter with the model to invert")
    for n, p in net.named_parameters():
        p.requires_grad_(n in names)
    params = [dict(net.named_parameters())[n] for n in names]
    target = [t.detach().float() for t in _selected(gradient, names, mask)]
    if labels is None and not config.soft_labels:
        raise GradguardError("invert needs labels or soft_labels=True")
    classes = num_classes or last_linear(net)[1].out_features

    best: tuple[float, torch.Tensor, torch.Tensor | None, int] | None = None
    for r in range(config.restarts):
        # The fused attention kernels have no double backward; the math kernel has.
        with sdpa_kernel(SDPBackend.MATH):
            images, soft, loss = _run(
                net, params, names, target, labels, shape, config, mask, classes, config.seed + r
            )
        if best is None or loss < best[0]:
            best = (loss, images, soft, r)
    loss, images, soft, r = best  # type: ignore[misc]
    out_labels = soft.argmax(1) if soft is not None else labels
    return images, {"gradient_loss": loss, "restart": r, "labels": out_labels}


def _run(net, params, names, target, labels, shape, config, mask, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).mul_(0.25).add_(0.5).clamp_(0, 1).requires_grad_(True)
    variables = [x]
    label_logits = None
    if config.soft_labels:
        label_logits = torch.randn(shape[0], classes, generator=g).requires_grad_(True)
        variables.append(label_logits)

    def objective() -> torch.Tensor:
        out = net(x)
        if label_logits is not None:
            loss = -(label_logits.softmax(1) * out.log_softmax(1)).sum(1).mean()
        else:
            loss = F.cross_entropy(out, labels)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        grads = _selected(dict(zip(names, grads, strict=True)), names, mask)
        dist = gradient_distance(grads, target, config.distance)
        return dist + config.tv * total_variation(x) if config.tv > 0 else dist

    if config.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(variables, lr=config.lr, max_iter=20, line_search_fn="strong_wolfe")
        steps = max(1, math.ceil(config.iterations / 20))

        def closure():
            opt.zero_grad()
            value = objective()
            value.backward()
            return value

        for _ in range(steps):
            opt.step(closure)
            if config.boxed:
                with torch.no_grad():
                    x.clamp_(0, 1)
    else:
        opt = torch.optim.Adam(variables, lr=config.lr)
        milestones = [int(config.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones if config.decay else [], gamma=0.1
        )
        for _ in range(config.iterations):
            opt.zero_grad()
            objective().backward()
            if config.signed:
                x.grad.sign_()
            opt.step()
            sched.step()
            if config.boxed:
                with torch.no_grad():
                    x.clamp_(0, 1)
    with torch.no_grad():
        x.clamp_(0, 1)
    final = float(objective().detach())
    soft = label_logits.detach().softmax(1) if label_logits is not None else None
    return x.detach(), soft, final


@dataclass
class InversionOptions:
    """The options of an Inverting Gradients run that attacks expose (see
    :class:`InversionConfig`); shared by :class:`InvertingGradients` and fishing."""

    iterations: int = InversionConfig.iterations
    lr: float = InversionConfig.lr
    tv: float = InversionConfig.tv
    restarts: int = 1
    seed: int = 0

    def config(self) -> InversionConfig:
        return InversionConfig(
            iterations=self.iterations,
            lr=self.lr,
            tv=self.tv,
            restarts=self.restarts,
            seed=self.seed,
        )


@dataclass
class InvertingGradients(InversionOptions, ServerAttack):
    """Passive (honest-but-curious) server: invert the update of an unmodified model.

    Options: ``iterations``, ``lr``, ``tv``, ``restarts``, ``seed`` (see
    :class:`InversionConfig`). The batch size is taken from ``Update.num_examples`` and the
    labels recovered from the last-layer gradient (iDLG / class counts).
    """

    name = "inverting-gradients"
    threat_model = ThreatModel(
        changes_architecture=False,
        protocols=("fedsgd", "fedavg"),
        aggregation="single",
        summary="honest model; FedSGD exactly, FedAvg delta treated as one gradient",
    )

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        return model, passive_secrets(model, aux)

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        return invert_update(update, secrets, self.config(), self.name)


def passive_secrets(model: nn.Module, aux: Dataset) -> dict[str, Any]:
    """What a passive server keeps: a copy of the model, the image shape, class priors."""
    head, _ = last_linear(model)
    return {
        "model": copy.deepcopy(model),
        "image_shape": aux.image_shape,
        "num_classes": aux.num_classes,
        "head": head,
        "mean_probs": mean_softmax(model, aux.x[:512]),
    }


def invert_update(
    update: Update, secrets: dict[str, Any], config: InversionConfig, name: str
) -> Reconstruction:
    """Recover labels from the update, then invert it with ``config``."""
    start = time.perf_counter()
    gradient = update.as_gradient()
    n = max(1, int(update.num_examples))
    labels = None
    if not config.soft_labels:
        labels = recover_labels(gradient, n, secrets["head"], secrets.get("mean_probs"))
    images, info = invert(
        secrets["model"],
        gradient,
        labels,
        (n, *secrets["image_shape"]),
        config,
        num_classes=secrets["num_classes"],
    )
    info.update(
        attack=name,
        seconds=time.perf_counter() - start,
        approximate=update.kind == "delta" and update.local_steps > 1,
    )
    return Reconstruction(images, info.pop("labels"), info)
