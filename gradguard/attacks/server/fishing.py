"""Fishing for user data (Wen et al., ICML 2022; seed 000, appendix A.1.3 and section 4.1).

The server rewrites the last linear layer (``head``) so that the batch gradient of every
layer below it comes from few samples, then inverts that gradient (Inverting Gradients,
:func:`gradguard.attacks.inversion.inverting.invert`).

With cross-entropy, sample ``i`` sends ``W^T (p_i - onehot(y_i))`` into the layers below
the head. With every head row but the target's zero, that is ``W_t (p_it - [y_i = t])``:
a sample is silent when ``p_it ~ 0`` and it is not of class ``t``, or ``p_it ~ 1`` and it
is of class ``t``.

- **Class fishing**: keep row ``t``, zero the other rows, set the other biases large
  (``bias``). Every ``p_it ~ 0``: only the target-class samples speak, each with weight
  ``-1``, and their number is read off the head bias gradient (``-B * db_t``).
- **Feature fishing**: row ``t`` becomes ``m / s`` on one penultimate feature ``f`` (``s``
  its spread on auxiliary data), bias ``-m * tau / s``. Target samples with ``h_f > tau``
  saturate (``p_t ~ 1``) and fall silent, so only the target samples below ``tau`` speak;
  ``tau`` is the quantile of the target class's ``h_f`` (auxiliary data) below which one
  target sample of a batch falls on average. Non-target samples above ``tau`` also speak,
  so ``f`` is the feature on which the target class stands highest above the others
  (fewest expected non-target speakers, reported in the secrets). The multiplier ``m``
  sets how sharp the gate is (the D-SNR grows with it; anchors: 16..12).

Disguises (the dials, white box against gradguard's detectors; textbook values by default).
Two freedoms of a softmax head hide the construction at no cost to the leak: a row ``w`` added
to every head row, and a constant added to every bias, change neither the probabilities nor
the gradient (``sum_j (p_ij - [y_i = j]) = 0``), so they move the statistics detectors read
(median row norm, bias mean) for free.

- ``row_scale``: the rows that should fall silent keep ``row_scale`` x their honest values
  instead of zero (no all-zero row); their samples leak at that relative level.
- ``common_row``: the norm of ``w``, in units of the honest head's median row norm (it raises
  the median row norm the bias-extremity score divides by; too large and the rows become
  near-parallel twins).
- ``common_bias``: the constant added to every bias (raises the floor of warmup+'s
  bias statistics).
- ``gap`` (class fishing): the logit gap that silences non-target samples, put into the
  target row along the mean penultimate feature (ReLU features are >= 0, so the gap holds
  for every input) instead of into the biases: ``gap`` is reached at the 1% quantile of the
  auxiliary data.
- ``speakers`` (feature fishing): target samples expected below the gate per batch; with two
  or more, no single sample dominates (D-SNR) and they are inverted jointly.

Threat model: parameters only (the head), FedSGD, one client (no secure aggregation).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ServerAttack, ThreatModel
from gradguard.attacks.inversion.inverting import InversionConfig, InversionOptions, invert
from gradguard.attacks.inversion.labels import last_linear
from gradguard.data import Dataset
from gradguard.errors import GradguardError
from gradguard.fl.update import Update

_THREAT = ThreatModel(
    changes_architecture=False,
    protocols=("fedsgd",),
    aggregation="single",
    summary="last linear layer only; FedSGD; one client",
)


@dataclass
class _InvertsFishedGradient(InversionOptions, ServerAttack):
    """Options of the Inverting Gradients run on the fished gradient (both fishing attacks)."""

    iterations: int = 500
    lr: float = 0.1
    tv: float = 1e-4


@dataclass
class ClassFishing(_InvertsFishedGradient):
    """Class fishing: only samples of ``target_class`` reach the layers below the head.

    ``images``: how many images to invert jointly from the fished gradient; ``0`` means as
    many as the target class holds in the batch (read from the head bias gradient), at
    most ``max_images`` (cost grows linearly with the count). ``bias``: added to the other
    classes' biases (the textbook logit gap). Disguises: ``row_scale``, ``common_row``,
    ``common_bias``, ``gap`` (module docstring).
    """

    target_class: int = 0
    bias: float = 1000.0
    images: int = 0
    max_images: int = 8
    row_scale: float = 0.0
    common_row: float = 0.0
    common_bias: float = 0.0
    gap: float = 0.0

    name = "fishing-class"
    threat_model = _THREAT
    dials: ClassVar[dict[str, tuple]] = {
        "row_scale": (0.0, 1e-2, 1e-1, 0.15),
        "bias": (1000.0, 10.0, 5.0),
        "common_row": (0.0, 0.6, 1.75),
        "gap": (0.0, 3.0, 10.0),
        "common_bias": (0.0, 1.0),
    }
    adaptive: ClassVar[dict[str, Any]] = {"row_scale": 0.15, "common_row": 1.75, "bias": 5.0}

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        fished = copy.deepcopy(model)
        head_name, head = last_linear(fished)
        t = _check_target(self.target_class, head)
        if head.bias is None:
            raise GradguardError(f"fishing needs a bias in the last layer {head_name!r}")
        others = torch.arange(head.out_features) != t
        gate = torch.zeros(head.in_features)
        if self.gap > 0:
            gate = -self.gap * positive_direction(penultimate(fished, aux.x))
        with torch.no_grad():
            honest_w, honest_b = head.weight.clone(), head.bias.clone()
            head.weight[others] = self.row_scale * honest_w[others]
            head.bias[others] = self.bias + self.row_scale * honest_b[others]
            head.weight[t] += gate
            disguise(head, honest_w, self.common_row, self.common_bias, self.seed)
        return fished, _secrets(fished, head_name, t, aux, {"base_model": copy.deepcopy(model)})

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        start = time.perf_counter()
        gradient = update.as_gradient()
        t, head = secrets["target_class"], secrets["head"]
        batch = max(1, int(update.num_examples))
        count = int(round(float(-gradient[f"{head}.bias"][t]) * batch / max(1, update.local_steps)))
        count = min(max(count, 0), batch)
        k = min(count if self.images <= 0 else self.images, count, self.max_images)
        info: dict[str, Any] = {"attack": self.name, "target_class": t, "target_count": count}
        if k == 0:
            info["seconds"] = time.perf_counter() - start
            return Reconstruction(
                torch.zeros(0, *secrets["image_shape"]), torch.zeros(0, dtype=torch.long), info
            )
        images, inv = invert_fished(update, secrets, k, self.config())
        info.update(gradient_loss=inv["gradient_loss"], seconds=time.perf_counter() - start)
        return Reconstruction(images, torch.full((k,), t), info)


@dataclass
class FeatureFishing(_InvertsFishedGradient):
    """Feature fishing within ``target_class``: about one target sample of the batch speaks.

    ``target_class``: the class to fish, or ``-1`` for the class whose best gate lets the
    fewest other samples speak. ``feature``: index of the penultimate feature, or ``-1`` for
    the best gate. ``batch_size``: the batch size the server expects (sets the quantile
    ``tau``). ``multiplier``: gate sharpness ``m``. ``train_steps``: Adam steps the server
    first trains the model on its auxiliary data (a later-round global model): the gate
    needs penultimate features that separate the class, which a freshly initialised
    network's do not (measured: ~10-30 non-target speakers at init, < 1 after 100 steps
    for Fashion-MNIST's trouser class). ``speakers``: target samples expected below the
    gate per batch (inverted jointly). ``gate_bias``: share of the gate's threshold carried
    by the target bias; the rest moves into the row, the gate then reads
    ``h_f - alpha u.h`` (``u`` the mean feature direction). Disguises: ``row_scale`` (of
    the trained head), ``common_row``, ``common_bias`` (module docstring).
    """

    target_class: int = -1
    feature: int = -1
    multiplier: float = 16.0
    batch_size: int = 64
    train_steps: int = 100
    speakers: float = 1.0
    gate_bias: float = 1.0
    row_scale: float = 0.0
    common_row: float = 0.0
    common_bias: float = 0.0

    name = "fishing-feature"
    threat_model = _THREAT
    takes_batch_size = True
    dials: ClassVar[dict[str, tuple]] = {
        "row_scale": (0.0, 1e-2, 1e-1, 0.3),
        "multiplier": (16.0, 8.0, 4.0),
        "speakers": (1.0, 2.0, 4.0),
        "gate_bias": (1.0, 0.5, 0.0),
        "common_row": (0.0, 1.0, 3.0),
        "common_bias": (0.0, 1.0),
    }
    adaptive: ClassVar[dict[str, Any]] = {
        "row_scale": 0.3,
        "common_row": 3.0,
        "gate_bias": 0.0,
        "multiplier": 4.0,
    }

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        fished = copy.deepcopy(model)
        head_name, head = last_linear(fished)
        if head.bias is None:
            raise GradguardError(f"fishing needs a bias in the last layer {head_name!r}")
        if self.target_class != -1:
            _check_target(self.target_class, head)
        if self.speakers <= 0:
            raise GradguardError(f"speakers must be positive (got {self.speakers})")
        pretrain(fished, aux, self.train_steps, self.seed)
        base = copy.deepcopy(fished)
        feats = penultimate(fished, aux.x)
        classes = [self.target_class] if self.target_class != -1 else range(head.out_features)
        gates = [g for t in classes if (g := self._gate(feats, aux.y, t)) is not None]
        if not gates:
            raise GradguardError(
                "no penultimate feature separates the target class on the "
                "auxiliary data (needs samples of the class and of others)"
            )
        gate = min(gates, key=lambda g: g["expected_other_speakers"])
        t, f = gate["target_class"], gate["feature"]
        direction = torch.zeros(head.in_features)
        direction[f] = 1.0
        if self.gate_bias < 1:
            # Gate on h_f - alpha u.h (u: positive direction) so that the threshold, and
            # the bias that carries it, shrinks to gate_bias x its textbook value.
            u = positive_direction(feats)
            is_t = aux.y == t
            proj = feats @ u
            alpha = (1 - self.gate_bias) * gate["threshold"] / float(proj[is_t].median())
            direction = direction - alpha * u
            gate = {**gate, **self._threshold(feats @ direction, is_t, gate["quantile"])}
        values = feats @ direction
        scale = float(values.std().clamp_min(1e-6))
        with torch.no_grad():
            honest_w = head.weight.clone()
            head.weight.mul_(self.row_scale)
            head.bias.mul_(self.row_scale)
            head.weight[t] += self.multiplier / scale * direction
            head.bias[t] += -self.multiplier * gate["threshold"] / scale
            disguise(head, honest_w, self.common_row, self.common_bias, self.seed)
        extra = {**gate, "scale": scale, "base_model": base}
        return fished, _secrets(fished, head_name, t, aux, extra)

    def _gate(self, feats: torch.Tensor, y: torch.Tensor, t: int) -> dict[str, Any] | None:
        """The feature and threshold that let one class-``t`` sample of a batch speak."""
        is_t = y == t
        if int(is_t.sum()) < 2 or int((~is_t).sum()) < 1:
            return None
        share = float(is_t.float().mean())
        per_batch = max(self.speakers, share * self.batch_size)
        q = self.speakers / per_batch  # on average ``speakers`` target samples below tau
        taus = torch.quantile(feats[is_t], q, dim=0)
        below = (feats[is_t] < taus).float().mean(0)
        spill = (feats[~is_t] > taus).float().mean(0) * (1 - share) * self.batch_size
        if self.feature >= 0:
            if self.feature >= feats.shape[1]:
                raise GradguardError(
                    f"feature {self.feature} out of range (the head has {feats.shape[1]} inputs)"
                )
            f = self.feature
        else:
            # A usable gate puts about the quantile's share of the class below tau (ReLU
            # features tied at zero do not); among those, the fewest non-target speakers.
            usable = (below >= q / 2) & (below <= 2 * q)
            if not bool(usable.any()):
                return None
            f = int(torch.where(usable, spill, torch.inf).argmin())
        return {
            "target_class": int(t),
            "feature": f,
            "quantile": q,
            "threshold": float(taus[f]),
            "expected_target_speakers": float(below[f]) * per_batch,
            "expected_other_speakers": float(spill[f]),
        }

    def _threshold(self, values: torch.Tensor, is_t: torch.Tensor, q: float) -> dict[str, float]:
        """The gate of one combined feature ``values`` (N) at the target class's quantile."""
        tau = torch.quantile(values[is_t], q)
        share = float(is_t.float().mean())
        per_batch = max(self.speakers, share * self.batch_size)
        return {
            "threshold": float(tau),
            "expected_target_speakers": float((values[is_t] < tau).float().mean()) * per_batch,
            "expected_other_speakers": float((values[~is_t] > tau).float().mean())
            * (1 - share)
            * self.batch_size,
        }

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        start = time.perf_counter()
        k = max(1, round(self.speakers))
        images, inv = invert_fished(update, secrets, k, self.config())
        t = secrets["target_class"]
        info = {
            "attack": self.name,
            "target_class": t,
            "feature": secrets["feature"],
            "gradient_loss": inv["gradient_loss"],
            "seconds": time.perf_counter() - start,
        }
        return Reconstruction(images, torch.full((k,), t), info)


def disguise(
    head: nn.Linear, honest_weight: torch.Tensor, common_row: float, common_bias: float, seed: int
) -> None:
    """Add a common row and a common bias to every row of ``head`` in place (the softmax
    and every gradient are unchanged). The row points in a random direction, its norm is
    ``common_row`` x the median row norm of ``honest_weight``."""
    if common_row:
        g = torch.Generator().manual_seed(seed)
        direction = torch.randn(head.in_features, generator=g)
        norm = float(honest_weight.norm(dim=1).median())
        head.weight += common_row * norm * direction / direction.norm()
    if common_bias:
        head.bias += common_bias


def positive_direction(feats: torch.Tensor, quantile: float = 0.01) -> torch.Tensor:
    """The mean of ``feats`` (>= 0 after a ReLU), scaled so that its product with the
    ``quantile`` of the rows is 1: ``-gap x`` it lowers a logit by ``gap`` or more for all
    but that share of inputs."""
    u = feats.mean(0).clamp_min(0)
    low = float(torch.quantile(feats @ u, quantile))
    if low <= 0:
        raise GradguardError("the penultimate features are not positive enough to carry a gap")
    return u / low


def pretrain(
    model: nn.Module,
    aux: Dataset,
    steps: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> None:
    """Train ``model`` in place for ``steps`` Adam steps on the server's auxiliary data."""
    if steps <= 0:
        return
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(aux), (min(batch_size, len(aux)),), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(aux.x[idx]), aux.y[idx]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)


def invert_fished(
    update: Update, secrets: dict[str, Any], k: int, config: InversionConfig
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Invert ``k`` target-class images from a fished gradient (head rows but ``t`` masked).

    The dummy is scored on the fished model with the target bias pushed far down, so the
    dummy always speaks (``p_t ~ 0``) as the isolated samples did; the direction of the
    gradient, all that the cosine distance sees, is the same.
    """
    gradient = update.as_gradient()
    model = copy.deepcopy(secrets["model"])
    head_name, head = last_linear(model)
    t = secrets["target_class"]
    with torch.no_grad():
        head.bias[t] = head.bias[t] - 1e4
    rows = torch.arange(head.out_features) == t
    mask = {f"{head_name}.weight": rows, f"{head_name}.bias": rows}
    labels = torch.full((k,), t, dtype=torch.long)
    return invert(model, gradient, labels, (k, *secrets["image_shape"]), config, mask=mask)


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The inputs of the last linear layer for ``x`` (N x features)."""
    model = copy.deepcopy(model).eval()  # leave the batch-norm statistics of ``model`` alone
    _, head = last_linear(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].flatten(1)))
    try:
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    finally:
        hook.remove()
    return torch.cat(seen)


def _check_target(t: int, head: nn.Linear) -> int:
    if not 0 <= t < head.out_features:
        raise GradguardError(f"target class {t} out of range (0..{head.out_features - 1})")
    return int(t)


def _secrets(
    model: nn.Module, head: str, t: int, aux: Dataset, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model),
        "head": head,
        "target_class": t,
        "image_shape": aux.image_shape,
        "num_classes": aux.num_classes,
        **extra,
    }
