"""Local training on a client: FedSGD (one gradient) or FedAvg (E epochs of SGD)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.cover import SecureRefusal, cover_update
from gradguard.fl.dp import ClientDP, privatize
from gradguard.fl.update import Update, float_state

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains in a round.

    ``fedsgd``: one gradient on one batch of ``batch_size`` (no step is taken).
    Otherwise FedAvg: ``epochs`` passes of ``optimizer``, or exactly ``steps`` steps when
    given. ``optimizer`` is ``sgd`` (heavy-ball ``momentum``), ``adam`` or ``adamw``
    (decoupled ``weight_decay``; for ``sgd`` and ``adam`` it is L2), with a fresh optimiser
    state every round; ``label_smoothing`` goes to the cross-entropy. ``train_mode``: the
    model runs in training mode (batch-norm batch statistics); ``False`` runs it in inference
    mode (running statistics; Valadi et al., seed 002).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    steps: int | None = None
    fedsgd: bool = False
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    train_mode: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.steps is not None and self.steps < 1):
            raise GradguardError("local training needs epochs, batch size and steps >= 1")
        if not (self.lr > 0) or not (0 <= self.momentum < 1):
            raise GradguardError(
                f"need lr > 0 and 0 <= momentum < 1 (got lr={self.lr}, momentum={self.momentum})"
            )
        if self.optimizer not in OPTIMIZERS:
            raise GradguardError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )
        if not (self.weight_decay >= 0) or not (0 <= self.label_smoothing < 1):
            raise GradguardError(
                f"need weight_decay >= 0 and 0 <= label_smoothing < 1 (got "
                f"{self.weight_decay}, {self.label_smoothing})"
            )


def local_update(
    model: nn.Module,
    data: Dataset,
    cfg: LocalTraining,
    generator: torch.Generator | None = None,
    client_id: int = -1,
) -> Update:
    """Train a private copy of ``model`` on ``data``; the received model is left untouched."""
    net = copy.deepcopy(model)
    net.train(cfg.train_mode)
    before = float_state(net)
    g = generator or torch.Generator().manual_seed(0)
    if cfg.fedsgd:
        idx = torch.randperm(len(data), generator=g)[: cfg.batch_size]
        net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(data.x[idx]), data.y[idx], label_smoothing=cfg.label_smoothing)
        loss.backward()
        params = dict(net.named_parameters())
        grads = {
            k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in params.items()
        }
        # Buffers (batch-norm running statistics) move in the forward pass; send their change.
        after = float_state(net)
        buffers = {k: after[k] - before[k] for k in before if k not in params}
        return Update(
            grads, len(idx), 1, cfg.lr, "gradient", client_id, {"loss": loss.item()}, buffers
        )
    params = [p for p in net.parameters() if p.requires_grad]
    momenta = [torch.zeros_like(p) for p in params] if cfg.momentum else []
    optimizer = _torch_optimizer(params, cfg)
    steps, seen, total_loss = 0, 0, 0.0
    epochs = cfg.epochs if cfg.steps is None else 10**9
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), cfg.batch_size):
            if cfg.steps is not None and steps >= cfg.steps:
                break
            idx = order[i : i + cfg.batch_size]
            for p in params:
                p.grad = None
            loss = F.cross_entropy(
                net(data.x[idx]), data.y[idx], label_smoothing=cfg.label_smoothing
            )
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            else:
                _sgd_step(params, momenta, cfg.lr, cfg.momentum)
            steps, seen, total_loss = steps + 1, seen + len(idx), total_loss + loss.item()
        if cfg.steps is not None and steps >= cfg.steps:
            break
    after = float_state(net)
    values = {k: after[k] - before[k] for k in before}
    return Update(
        values,
        len(data) if cfg.steps is None else seen,
        steps,
        cfg.lr,
        "delta",
        client_id,
        {"loss": total_loss / max(1, steps)},
    )


def train_sgd(
    model: nn.Module, data: Dataset, epochs: int = 1, lr: float = 0.05, batch_size: int = 32
) -> nn.Module:
    """Plain SGD on ``data`` in place (shuffled by torch's global generator); returns the
    model in evaluation mode. By hand rather than through torch.optim, whose first use
    imports torch._dynamo (seconds): for test fixtures and benchmarks' honest models."""
    model.train()
    params = list(model.parameters())
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for i in range(0, len(data), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(lr * g)
    return model.eval()


def _torch_optimizer(params: list[torch.Tensor], cfg: LocalTraining):
    """``torch.optim`` Adam / AdamW, or SGD with weight decay; None for the plain SGD below."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.weight_decay:
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return None


def _sgd_step(
    params: list[torch.Tensor], momenta: list[torch.Tensor], lr: float, momentum: float
) -> None:
    """``torch.optim.SGD``'s update (heavy-ball momentum, no dampening), written out: the
    optimizer's first construction imports TorchDynamo, seconds per process."""
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            step = p.grad
            if momenta:
                step = momenta[i].mul_(momentum).add_(p.grad)
            p.add_(step, alpha=-lr)


Guard = Callable[[nn.Module], bool]
Poison = Callable[[Update], Update]


@dataclass
class Client:
    """A client: its private data, how it trains, an optional guard, an optional poison.

    ``guard(model) -> bool`` returns True when the received model may be trained on;
    a client whose guard refuses abstains (``train`` returns None). ``poison`` models a
    Byzantine client: it rewrites the update before it is sent, after any DP an honest
    client applies (see :mod:`gradguard.fl.byzantine`).
    """

    client_id: int
    data: Dataset
    training: LocalTraining
    guard: Guard | None = None
    poison: Poison | None = None
    # under secure aggregation: what a refused round sends (None: nothing, it drops out)
    refusal: SecureRefusal | None = None

    def accepts(self, model: nn.Module) -> bool:
        """Whether the guard (if any) lets this client train on ``model``."""
        return self.guard is None or bool(self.guard(model))

    def fit(
        self, model: nn.Module, generator: torch.Generator, dp: ClientDP | None = None
    ) -> Update:
        """Local training, then client-level DP (if ``dp``), then the poison (if any)."""
        update = local_update(model, self.data, self.training, generator, self.client_id)
        if dp is not None:
            update = privatize(update, dp, generator)
        return self.poison(update) if self.poison is not None else update

    def cover(self, received: nn.Module, generator: torch.Generator) -> Update | None:
        """What this client masks into a secure round it refused: a noise cover shaped on
        its honest update on its reference model (:mod:`gradguard.fl.cover`); None when its
        policy is to drop out or it has no reference."""
        if self.refusal is None or self.refusal.mode != "cover":
            return None
        reference = getattr(self.guard, "reference", None)
        state = reference() if callable(reference) else None
        if state is None:
            return None
        model = copy.deepcopy(received)
        model.load_state_dict(state)
        honest = local_update(model, self.data, self.training, generator, self.client_id)
        return cover_update(honest, self.refusal.scale)

    def train(
        self, model: nn.Module, generator: torch.Generator, dp: ClientDP | None = None
    ) -> Update | None:
        """:meth:`fit` if the guard accepts ``model``; None (abstain) otherwise."""
        return self.fit(model, generator, dp) if self.accepts(model) else None
