"""Which reading of seed 000's warm-up Z-score reproduces what the paper reports?

Section 5.2 says only that the current statistic is compared with "its historical mean"
by a Z-score. Read literally (``warmup``), the first step's history holds one value, so its
Z-score is the change divided by ``eps``. This experiment scores the same warm-up
statistics (5 SGD steps on 128 local samples, mean / std / max-abs per target layer) under
several readings and measures each against the paper's three reported behaviours:

- **B1 (Fig. 3)**: on honest ResNet-18 after every round of training, the maximum Z stays
  below 4000 and rises with training (with fluctuations after convergence).
- **B2 (section 5.3)**: on a benign model "the z-scores remain close to zero throughout the
  first four warm-up steps"; at the last step the largest is a Z-mean of 9.44.
- **B3 (Table 1)**: after one warm-up step on a fished model (Wen et al.), the Z-scores of
  the first and last linear layers are orders of magnitude above a benign model's.

The last linear layer's Z-mean is left out everywhere: plain SGD cannot move the mean of a
softmax layer's weights or biases (see :func:`softmax_mean_drift`), so that statistic is
float rounding noise divided by a small denominator.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from gradguard.detect.warmup import STATS, WarmUp, target_stats
from gradguard.experiments.harness import honest_federation, markdown_table
from gradguard.experiments.harness import progress as progress_bar
from gradguard.fl import LocalTraining
from gradguard.metrics import accuracy

EPS = 1e-8
NAN = float("nan")


# --- candidate readings: statistics ``... x T x 3`` (step 0 = received) -> Z ``... x (T-1) x 3``
def _against(s: torch.Tensor, first: int, ddof: int, eps: float, min_hist: int) -> torch.Tensor:
    """Z of step ``t`` against steps ``first..t-1``; NaN where that history is too short."""
    out = []
    for t in range(1, s.shape[-2]):
        hist = s[..., first:t, :]
        if hist.shape[-2] < max(1, min_hist):
            out.append(torch.full_like(s[..., t, :], NAN))
            continue
        std = hist.std(-2, correction=ddof) if hist.shape[-2] > ddof else 0 * hist[..., 0, :]
        out.append((s[..., t, :] - hist.mean(-2)) / (std + eps))
    return torch.stack(out, dim=-2)


def literal(s: torch.Tensor) -> torch.Tensor:
    """``warmup``: steps 1..T against 0..t-1, population std + 1e-8 (step 1: change / eps)."""
    return _against(s, 0, 0, EPS, 1)


def literal_eps(eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def z(s: torch.Tensor) -> torch.Tensor:
        return _against(s, 0, 0, eps, 1)

    z.__doc__ = f"as literal with eps = {eps:g}"
    return z


def from_step2(s: torch.Tensor) -> torch.Tensor:
    """Steps 2..T only (a history of >= 2 values, step 0 included), population std."""
    return _against(s, 0, 0, EPS, 2)


def from_step2_ddof1(s: torch.Tensor) -> torch.Tensor:
    """Steps 2..T only, sample std (ddof 1)."""
    return _against(s, 0, 1, EPS, 2)


def without_received(s: torch.Tensor) -> torch.Tensor:
    """History starts at step 1 (the received model left out); steps 3..T, population std."""
    return _against(s, 1, 0, EPS, 2)


def without_received_ddof1(s: torch.Tensor) -> torch.Tensor:
    """History starts at step 1; steps 3..T, sample std (ddof 1)."""
    return _against(s, 1, 1, EPS, 2)


def including_current(s: torch.Tensor) -> torch.Tensor:
    """Step ``t`` against steps 0..t (itself included), population std: ``|Z| <= sqrt(t)``."""
    out = [
        (s[..., t, :] - s[..., : t + 1, :].mean(-2))
        / (s[..., : t + 1, :].std(-2, correction=0) + EPS)
        for t in range(1, s.shape[-2])
    ]
    return torch.stack(out, dim=-2)


def relative_scale(rel: float = 1e-3) -> Callable[[torch.Tensor], torch.Tensor]:
    """Denominator ``max(std(history), rel * (|mean(history)| + spread_0))`` (warmup+'s)."""

    def z(s: torch.Tensor) -> torch.Tensor:
        spread0 = s[..., 0, 1].abs().unsqueeze(-1)
        out = []
        for t in range(1, s.shape[-2]):
            hist = s[..., :t, :]
            mean = hist.mean(-2)
            floor = rel * (mean.abs() + spread0) + 1e-12
            out.append((s[..., t, :] - mean) / torch.maximum(hist.std(-2, correction=0), floor))
        return torch.stack(out, dim=-2)

    z.__doc__ = f"steps 1..T, denominator max(std, {rel:g} x (|mean| + step-0 spread))"
    return z


READINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "literal (warmup)": literal,
    "literal, eps 1e-4": literal_eps(1e-4),
    "from step 2": from_step2,
    "from step 2, ddof 1": from_step2_ddof1,
    "without received": without_received,
    "without received, ddof 1": without_received_ddof1,
    "including current": including_current,
    "relative scale 1e-3": relative_scale(1e-3),
    "relative scale 1e-2": relative_scale(1e-2),
}
# Statistics of the parameter *change* theta_t - theta_0 (activations unchanged), scored
# against the history from step 1 (step 0's change is zero by definition).
CHANGE_READINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "change, without received": without_received,
    "change, without received, ddof 1": without_received_ddof1,
}


class ChangeStats(WarmUp):
    """The warm-up loop recording the statistics of ``theta_t - theta_0`` for parameters."""

    name = "warmup"

    def param_stats(self, params, received, names):
        return target_stats({n: params[n] - received[n] for n in params}, names)


def softmax_mean_drift(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float):
    """One plain SGD step on cross-entropy: change of the last layer's weight and bias means.

    ``dL/dlogits = p - onehot(y)`` sums to zero over classes for every sample, so each column
    of the head's weight gradient and its bias gradient sum to zero: the means cannot move.
    Returns the change of each mean next to the float32 spacing (ulp) at the layer's scale.
    """
    from gradguard.detect.layers import linears

    model = copy.deepcopy(model).train()
    head = dict(model.named_modules())[linears(model)[-1]]
    before = (head.weight.detach().clone(), head.bias.detach().clone())
    loss = F.cross_entropy(model(x), y)
    gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
    after = (before[0] - lr * gw, before[1] - lr * gb)
    out = {}
    for name, b, a, g in (
        ("weight", before[0], after[0], gw),
        ("bias", before[1], after[1], gb),
    ):
        out[name] = {
            "gradient_mean": float(g.double().mean()),
            "gradient_abs_mean": float(g.double().abs().mean()),
            "mean_change": float(a.double().mean() - b.double().mean()),
            "std_change": float(a.double().std() - b.double().std()),
            "ulp_at_scale": float(torch.finfo(torch.float32).eps * b.abs().max()),
        }
    return out


# --- data: honest FedAvg rounds, and fished copies at some rounds -----------------------
@dataclass(frozen=True)
class ReadingsConfig:
    dataset: str = "digits"
    limit: int | None = None
    model: str = "resnet"
    norm: str | None = "batch"
    clients: int = 4
    rounds: int = 30
    training: LocalTraining = field(
        default_factory=lambda: LocalTraining(epochs=1, batch_size=32, lr=0.1)
    )
    fish_rounds: tuple[int, ...] = (2, 10, 30)
    attacks: tuple[tuple[str, dict[str, Any]], ...] = (
        ("fishing-class", {"bias": 1000.0}),
        ("fishing-feature", {"multiplier": 16.0}),
    )
    seed: int = 0


def _as_tensors(stats: dict[str, dict[str, list[float]]]) -> dict[str, list[list[float]]]:
    return {
        k: [list(r) for r in zip(*(v[s] for s in STATS), strict=True)] for k, v in stats.items()
    }


def collect(cfg: ReadingsConfig = ReadingsConfig(), progress: bool = True) -> dict[str, Any]:
    """Raw warm-up statistics (5 x 128) of every honest round and of the fished models."""
    from gradguard.attacks import get_attack
    from gradguard.detect import Context
    from gradguard.detect.layers import linears

    start = time.perf_counter()
    hf = honest_federation(
        cfg.dataset, cfg.limit, cfg.model, cfg.norm, cfg.clients, cfg.rounds, cfg.training, cfg.seed
    )
    fed, template, parts, test = hf.federation, hf.template, hf.parts, hf.test
    ctx = Context(template=template, data=parts[0])
    plain, change = WarmUp(), ChangeStats()

    def profile(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        v = plain.inspect(state, ctx)
        c = change.inspect(state, ctx)
        return {
            "stats": _as_tensors(v.metadata["stats"]),
            "change": _as_tensors(c.metadata["stats"]),
            "loss": v.metadata["loss"],
        }

    rounds, fished = [], []
    with progress_bar("rounds", cfg.rounds + 1, progress) as (bar, task):
        for rnd in range(cfg.rounds + 1):
            acc = accuracy(fed.model, test.x, test.y) if rnd == 0 else fed.round(rnd).accuracy
            state = {k: v.detach().clone() for k, v in fed.model.state_dict().items()}
            rounds.append({"round": rnd, "accuracy": acc, **profile(state)})
            if rnd in cfg.fish_rounds:
                for name, options in cfg.attacks:
                    bad, _ = get_attack(name, **options).manipulate(copy.deepcopy(fed.model), test)
                    st = {k: v.detach().clone() for k, v in bad.state_dict().items()}
                    fished.append({"round": rnd, "attack": name, **profile(st)})
            bar.update(task, advance=1)
    x = parts[0].x[:128]
    y = parts[0].y[:128]
    return {
        "config": {
            "dataset": cfg.dataset,
            "model": cfg.model,
            "norm": cfg.norm,
            "clients": cfg.clients,
            "rounds": cfg.rounds,
            "training": str(cfg.training),
            "warmup": "5 steps x 128 samples, lr 0.05",
            "attacks": [[n, o] for n, o in cfg.attacks],
            "seed": cfg.seed,
        },
        "rounds": rounds,
        "fished": fished,
        "one_linear": len(linears(template)) == 1,
        "softmax_mean_drift": softmax_mean_drift(fed.model, x, y, lr=0.05),
        "seconds": time.perf_counter() - start,
    }


# --- scoring: the three behaviours ------------------------------------------------------
def zscores(profile: dict[str, Any], reading: str, one_linear: bool) -> dict[str, torch.Tensor]:
    """``key -> (steps x 3)`` |Z| under ``reading``; the last linear layer's mean is NaN
    (``one_linear``: ``linear[0]`` is that layer too)."""
    fn = READINGS.get(reading) or CHANGE_READINGS[reading]
    src = profile["change"] if reading in CHANGE_READINGS else profile["stats"]
    out = {}
    for key, rows in src.items():
        z = fn(torch.tensor(rows, dtype=torch.float64)).abs()
        if key.startswith("linear[-1]") or (one_linear and key.startswith("linear[0]")):
            z[:, STATS.index("mean")] = NAN
        out[key] = z
    return out


def _nanmax(values) -> float:
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return max(vals) if vals else NAN


def _peak(z: dict[str, torch.Tensor], steps: slice, keys=None) -> float:
    return _nanmax(
        v for k, t in z.items() if keys is None or k.startswith(keys) for v in t[steps].flatten()
    )


def first_scored(z: dict[str, torch.Tensor]) -> int:
    """Index of the first warm-up step a reading scores (0 = step 1)."""
    for i in range(next(iter(z.values())).shape[0]):
        if any(not math.isnan(float(v)) for t in z.values() for v in t[i]):
            return i
    return 0


def evaluate(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per reading: the numbers behind B1, B2 and B3."""
    from scipy.stats import spearmanr

    rows = []
    honest_by_round = {r["round"]: r for r in raw["rounds"]}
    one = raw["one_linear"]
    for reading in list(READINGS) + list(CHANGE_READINGS):
        per_round = [_peak(zscores(r, reading, one), slice(None)) for r in raw["rounds"]]
        rho = float(spearmanr([r["round"] for r in raw["rounds"]], per_round).statistic)
        rho_acc = float(spearmanr([r["accuracy"] for r in raw["rounds"]], per_round).statistic)
        trained = [r for r in raw["rounds"] if r["round"] >= 10]
        early = _nanmax(_peak(zscores(r, reading, one), slice(0, 4)) for r in trained)
        final = _nanmax(_peak(zscores(r, reading, one), slice(4, 5)) for r in trained)
        fish = {}
        for f in raw["fished"]:
            zf = zscores(f, reading, one)
            zh = zscores(honest_by_round[f["round"]], reading, one)
            i = first_scored(zh)
            lin_f = _peak(zf, slice(i, i + 1), ("linear",))
            lin_h = _peak(zh, slice(i, i + 1), ("linear",))
            fish.setdefault(f["attack"], []).append(
                {
                    "round": f["round"],
                    "step": i + 1,
                    "linear_fished": lin_f,
                    "linear_honest": lin_h,
                    "linear_ratio": lin_f / lin_h if lin_h > 0 else math.inf,
                    "max_fished": _peak(zf, slice(None)),
                }
            )
        honest_max = _nanmax(per_round)
        rows.append(
            {
                "reading": reading,
                "doc": (READINGS.get(reading) or CHANGE_READINGS[reading]).__doc__,
                "honest_peak": honest_max,
                "honest_min": min(v for v in per_round if not math.isnan(v)),
                "rounds_below_4000": sum(v < 4000 for v in per_round),
                "rounds": len(per_round),
                "spearman_round": rho,
                "spearman_accuracy": rho_acc,
                "per_round": per_round,
                "trained_steps_1_4": early,
                "trained_step_5": final,
                "fishing": fish,
                "fished_above_all_honest": {
                    a: sum(x["max_fished"] > honest_max for x in v) for a, v in fish.items()
                },
            }
        )
    return rows


def to_markdown(raw: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    c = raw["config"]
    attacks = [a for a, _ in c["attacks"]]
    out = [
        "# Warm-up Z-score readings vs the seed paper's reported behaviour\n\n",
        f"{c['model']} ({c['norm']} norm) on {c['dataset']}, {c['clients']} IID clients, "
        f"{c['rounds']} honest FedAvg rounds ({c['training']}); warm-up {c['warmup']} on client "
        f"0's data after every round; {', '.join(attacks)} applied to the global model at rounds "
        f"{sorted({f['round'] for f in raw['fished']})}. The last linear layer's Z-mean is "
        f"left out. Runtime {raw['seconds']:.0f} s.\n\n",
        "- **B1** (Fig. 3: honest max Z < 4000, rising with training): peak and range of the "
        "per-round max |Z|, rounds below 4000, Spearman correlation with the round number.\n",
        "- **B2** (benign: ~0 in warm-up steps 1-4, largest 9.44 at step 5): largest |Z| over "
        "honest models of rounds >= 10, in steps 1-4 and at step 5 (NaN: not scored).\n",
        "- **B3** (Table 1: linear-layer Z orders of magnitude above benign after one step): "
        "fished / honest ratio of the linear layers' largest |Z| at the first scored step "
        "(in brackets), at each fish round; and in how many fish rounds the fished model's "
        "max |Z| exceeds every honest round's.\n\n",
    ]
    headers = [
        "reading",
        "B1 honest max |Z| (min-peak)",
        "B1 rounds < 4000",
        "B1 rho(round)",
        "B2 steps 1-4",
        "B2 step 5",
    ]
    for a in attacks:
        headers += [f"B3 {a} linear ratio per fish round (step)", f"{a} above all honest"]
    table = []
    for r in rows:
        line = [
            r["reading"],
            f"{r['honest_min']:.3g}-{r['honest_peak']:.3g}",
            f"{r['rounds_below_4000']}/{r['rounds']}",
            f"{r['spearman_round']:+.2f}",
            f"{r['trained_steps_1_4']:.3g}",
            f"{r['trained_step_5']:.3g}",
        ]
        for a in attacks:
            fs = r["fishing"].get(a, [])
            ratios = "/".join(f"{x['linear_ratio']:.3g}" for x in fs) or "-"
            line += [
                f"{ratios} ({fs[0]['step'] if fs else '-'})",
                f"{r['fished_above_all_honest'].get(a, 0)}/{len(fs)}",
            ]
        table.append(line)
    out.append(markdown_table(headers, table))
    out.append("\nReadings:\n\n")
    out += [f"- `{r['reading']}`: {r['doc']}\n" for r in rows]
    d = raw["softmax_mean_drift"]
    out.append(
        "\nLast linear layer under one plain SGD step (lr 0.05, 128 samples, the trained "
        "model): "
        + "; ".join(
            f"{k}: gradient mean {v['gradient_mean']:.2g} (mean |gradient| "
            f"{v['gradient_abs_mean']:.2g}), change of the mean {v['mean_change']:.2g}, "
            f"float32 spacing at the layer's scale {v['ulp_at_scale']:.2g}"
            for k, v in d.items()
        )
        + ".\n"
    )
    return "".join(out)
