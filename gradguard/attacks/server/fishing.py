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

Threat model: parameters only (the head), FedSGD, one client (no secure aggregation).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.attacks.base import Reconstruction, ThreatModel
from gradguard.attacks.inversion.inverting import InversionConfig, invert
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
class ClassFishing:
    """Class fishing: only samples of ``target_class`` reach the layers below the head.

    ``images``: how many images to invert from the fished gradient; ``0`` means as many
    as the target class holds in the batch (read from the head bias gradient).
    """

    target_class: int = 0
    bias: float = 1000.0
    images: int = 1
    iterations: int = 500
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 1
    seed: int = 0

    name = "fishing-class"
    threat_model = _THREAT

    def config(self) -> InversionConfig:
        return InversionConfig(
            iterations=self.iterations,
            lr=self.lr,
            tv=self.tv,
            restarts=self.restarts,
            seed=self.seed,
        )

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        fished = copy.deepcopy(model)
        head_name, head = last_linear(fished)
        t = _check_target(self.target_class, head)
        others = torch.arange(head.out_features) != t
        with torch.no_grad():
            head.weight[others] = 0
            if head.bias is None:
                raise GradguardError(f"fishing needs a bias in the last layer {head_name!r}")
            head.bias[others] = self.bias
        return fished, _secrets(fished, head_name, t, aux, {})

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        start = time.perf_counter()
        gradient = update.as_gradient()
        t, head = secrets["target_class"], secrets["head"]
        batch = max(1, int(update.num_examples))
        count = int(round(float(-gradient[f"{head}.bias"][t]) * batch / max(1, update.local_steps)))
        count = min(max(count, 0), batch)
        k = count if self.images <= 0 else min(self.images, count)
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
class FeatureFishing:
    """Feature fishing within ``target_class``: one target sample of the batch speaks.

    ``feature``: index of the penultimate feature, or ``-1`` for the one that best
    separates the target class on auxiliary data. ``batch_size``: the batch size the
    server expects (sets the quantile ``tau``). ``multiplier``: gate sharpness ``m``.
    """

    target_class: int = 0
    feature: int = -1
    multiplier: float = 16.0
    batch_size: int = 64
    iterations: int = 500
    lr: float = 0.1
    tv: float = 1e-4
    restarts: int = 1
    seed: int = 0

    name = "fishing-feature"
    threat_model = _THREAT

    def config(self) -> InversionConfig:
        return InversionConfig(
            iterations=self.iterations,
            lr=self.lr,
            tv=self.tv,
            restarts=self.restarts,
            seed=self.seed,
        )

    def manipulate(self, model: nn.Module, aux: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        fished = copy.deepcopy(model)
        head_name, head = last_linear(fished)
        t = _check_target(self.target_class, head)
        if head.bias is None:
            raise GradguardError(f"fishing needs a bias in the last layer {head_name!r}")
        feats = penultimate(fished, aux.x)
        is_t = aux.y == t
        if int(is_t.sum()) < 2 or int((~is_t).sum()) < 1:
            raise GradguardError(f"the auxiliary data needs samples of class {t} and others")
        share = float(is_t.float().mean())
        per_batch = max(1.0, share * self.batch_size)
        q = min(1.0, 1.0 / per_batch)  # on average one target sample of a batch below tau
        taus = torch.quantile(feats[is_t], q, dim=0)
        spill = (feats[~is_t] > taus).float().mean(0) * (1 - share) * self.batch_size
        if self.feature >= 0:
            if self.feature >= feats.shape[1]:
                raise GradguardError(
                    f"feature {self.feature} out of range (the head has {feats.shape[1]} inputs)"
                )
            f = self.feature
        else:
            spill_ok = torch.where(feats[is_t].std(0) > 0, spill, torch.inf)
            f = int(spill_ok.argmin())
        tau = float(taus[f])
        scale = float(feats[:, f].std().clamp_min(1e-6))
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.weight[t, f] = self.multiplier / scale
            head.bias[t] = -self.multiplier * tau / scale
        extra = {
            "feature": f,
            "threshold": tau,
            "scale": scale,
            "expected_target_speakers": q * per_batch,
            "expected_other_speakers": float(spill[f]),
        }
        return fished, _secrets(fished, head_name, t, aux, extra)

    def reconstruct(self, update: Update, secrets: dict[str, Any]) -> Reconstruction:
        start = time.perf_counter()
        images, inv = invert_fished(update, secrets, 1, self.config())
        t = secrets["target_class"]
        info = {
            "attack": self.name,
            "target_class": t,
            "feature": secrets["feature"],
            "gradient_loss": inv["gradient_loss"],
            "seconds": time.perf_counter() - start,
        }
        return Reconstruction(images, torch.full((1,), t), info)


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
