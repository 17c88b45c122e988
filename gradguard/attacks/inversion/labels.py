"""Labels from the last linear layer's gradient (iDLG, Zhao et al. 2020; batch counts).

With cross-entropy, the gradient of the logits of sample ``i`` is ``p_i - onehot(y_i)``: only
the true class is negative. For one sample the true label is therefore the class whose bias
gradient (or weight-row sum, since post-ReLU features are >= 0) is negative (iDLG). For a
batch of ``B`` the mean bias gradient of class ``j`` is ``mean_i p_ij - n_j / B``, so the
count is ``n_j = B * (mean_p_j - db_j)`` (the class-count estimate of Geiping et al. 2020,
sec. 4, and Wainakh et al.'s LLG), with ``mean_p`` estimated from the model's softmax.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradguard.errors import GradguardError


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification layer: the module named ``head``, else the last ``nn.Linear``."""
    named = dict(model.named_modules())
    if isinstance(named.get("head"), nn.Linear):
        return "head", named["head"]
    linears = [(n, m) for n, m in named.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise GradguardError("the model has no linear classification layer")
    return linears[-1]


def _head_signal(gradient: dict[str, torch.Tensor], head: str) -> torch.Tensor:
    """Per-class signal of the last layer: the bias gradient, else the weight-row sums."""
    if f"{head}.bias" in gradient:
        return gradient[f"{head}.bias"].detach().float()
    if f"{head}.weight" in gradient:
        return gradient[f"{head}.weight"].detach().float().sum(1)
    raise GradguardError(f"the update has no gradient for the last layer {head!r}")


def idlg_label(gradient: dict[str, torch.Tensor], head: str = "head") -> int:
    """iDLG: the single sample's label is the class with the most negative head gradient."""
    return int(_head_signal(gradient, head).argmin())


def label_counts(
    gradient: dict[str, torch.Tensor],
    batch_size: int,
    head: str = "head",
    mean_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Estimated number of samples per class in a batch of ``batch_size`` (sums to it).

    ``mean_probs`` is the expected softmax of the model on client-like data (e.g. from
    auxiliary data); without it the model is assumed uninformed (uniform ``1 / C``).
    """
    signal = _head_signal(gradient, head)
    c = signal.numel()
    p = torch.full((c,), 1.0 / c) if mean_probs is None else mean_probs.float()
    raw = (batch_size * (p - signal)).clamp_min(0)
    if raw.sum() <= 0:
        raw = torch.ones(c)
    raw = raw * batch_size / raw.sum()
    counts = raw.floor().long()
    # Largest remainder: hand out what flooring lost to the classes closest to the next unit.
    for j in torch.argsort(raw - counts, descending=True)[: batch_size - int(counts.sum())]:
        counts[j] += 1
    return counts


def labels_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """A label vector with ``counts[j]`` copies of class ``j``, in class order."""
    return torch.repeat_interleave(torch.arange(counts.numel()), counts)


def recover_labels(
    gradient: dict[str, torch.Tensor],
    batch_size: int,
    head: str = "head",
    mean_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels of the batch: iDLG for one sample, class counts for more."""
    if batch_size == 1:
        return torch.tensor([idlg_label(gradient, head)])
    return labels_from_counts(label_counts(gradient, batch_size, head, mean_probs))


@torch.no_grad()
def mean_softmax(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean predicted class distribution of ``model`` on ``x`` (for :func:`label_counts`).

    Runs on a copy in eval mode, so batch-norm statistics of ``model`` are left as they are.
    """
    net = copy.deepcopy(model).eval()
    return net(x).softmax(1).mean(0)
