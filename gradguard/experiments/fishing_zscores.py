"""Table 1 of seed 000: warm-up Z-scores per target layer under fishing, after one step.

The paper fishes on ResNet-18 with batch norm (CIFAR-100) and lists, for each target layer
of its warm-up detector (section 5.2), the Z-scores of the mean, standard deviation and
largest magnitude after the first warm-up step: the first and last linear layers sit
orders of magnitude above a benign model's. Here: ``resnet`` with batch norm trained by
honest FedAvg on digits, then manipulated by class fishing and by feature fishing; the
client runs the warm-up detector on the honest and on each fished model. Our ``resnet``
has one linear layer (``head``), so ``linear[0]`` and ``linear[-1]`` are the same layer;
the target layers are reported as the detector names them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gradguard.experiments.harness import honest_federation, markdown_table
from gradguard.fl import LocalTraining

STATS = ("mean", "std", "maxabs")


@dataclass(frozen=True)
class Table1Config:
    dataset: str = "digits"
    limit: int | None = None
    model: str = "resnet"
    norm: str | None = "batch"
    clients: int = 4
    pretrain_rounds: int = 10
    training: LocalTraining = field(
        default_factory=lambda: LocalTraining(epochs=1, batch_size=32, lr=0.1)
    )
    attacks: tuple[tuple[str, dict[str, Any]], ...] = (
        ("fishing-class", {"bias": 1000.0}),
        ("fishing-feature", {"multiplier": 16.0}),
    )
    detector: str = "warmup"
    step: int = 1  # the warm-up step whose Z-scores are tabulated (1 = after one step)
    seed: int = 0


def _zs(metadata: dict[str, Any], step: int) -> dict[str, dict[str, float]]:
    """Z-score of each statistic of each target layer at warm-up ``step`` (1-based)."""
    return {
        layer: {s: float(stats[s][step - 1]) for s in STATS}
        for layer, stats in metadata["z"].items()
    }


def run(cfg: Table1Config = Table1Config(), progress: bool = True) -> dict[str, Any]:
    from gradguard.attacks import get_attack
    from gradguard.detect import Context, get_detector
    from gradguard.detect.layers import linears
    from gradguard.detect.warmup import WarmUp

    start = time.perf_counter()
    hf = honest_federation(
        cfg.dataset,
        cfg.limit,
        cfg.model,
        cfg.norm,
        cfg.clients,
        cfg.pretrain_rounds,
        cfg.training,
        cfg.seed,
    )
    fed, template, parts, test = hf.federation, hf.template, hf.parts, hf.test
    history = fed.run(progress=progress)
    honest = fed.model
    # The server's auxiliary data: the test split (disjoint from every client's data).
    aux = test
    det = get_detector(cfg.detector)
    ctx = Context(template=template, data=parts[0])

    def profile(m: torch.nn.Module) -> dict[str, Any]:
        state = {k: v.detach().clone() for k, v in m.state_dict().items()}
        v = det.inspect(state, ctx)
        steps = len(next(iter(v.metadata["z"].values()))["mean"])
        return {
            "flagged": v.malicious,
            "score": v.score,
            "step": _zs(v.metadata, cfg.step),
            "last_step": _zs(v.metadata, steps),
            "steps": steps,
        }

    models = {"honest": profile(honest)}
    for name, options in cfg.attacks:
        fished, _ = get_attack(name, **options).manipulate(copy.deepcopy(honest), aux)
        models[name] = profile(fished)
    layers = list(models["honest"]["step"])
    lin = linears(template)
    return {
        "config": {
            "dataset": cfg.dataset,
            "model": cfg.model,
            "norm": cfg.norm,
            "pretrain_rounds": cfg.pretrain_rounds,
            "accuracy": history[-1].accuracy if history else None,
            "attacks": [[n, o] for n, o in cfg.attacks],
            "detector": cfg.detector,
            "step": cfg.step,
        },
        "threshold": det.t["z"],
        "target_layers": layers,
        # plain SGD cannot move these: their Z is float rounding noise (WarmUp.unscored)
        "rounding_noise": sorted(f"{k}.{s}" for k, s in WarmUp.unscored(template)),
        "linear_layers": {"linear[0]": lin[0], "linear[-1]": lin[-1]} if lin else {},
        "models": models,
        "seconds": time.perf_counter() - start,
    }


def to_markdown(result: dict[str, Any]) -> str:
    c, models = result["config"], result["models"]
    names = list(models)
    step = c["step"]
    out = [
        f"# Table 1: warm-up Z-scores per target layer after warm-up step {step}\n\n",
        f"{c['model']} ({c['norm']} norm) after {c['pretrain_rounds']} honest FedAvg rounds on "
        f"{c['dataset']} (test accuracy {c['accuracy']:.3f}); detector `{c['detector']}` "
        f"(its default warm-up: 5 x 128 samples for warmup and warmup-paper, 1 x 32 for "
        f"warmup+; threshold {result.get('threshold', float('nan')):.3g}). Values are "
        f"|Z| of the layer's mean, std and max-abs "
        f"at step {step}. Linear layers: "
        + ", ".join(f"`{k}` = `{v}`" for k, v in result["linear_layers"].items())
        + (
            " (one linear layer, the head: both rows are the same layer)"
            if len(set(result["linear_layers"].values())) == 1
            else ""
        )
        + ". Verdicts: "
        + ", ".join(
            f"{n} {'flagged' if models[n]['flagged'] else 'passed'} (score "
            f"{models[n]['score']:.3g})"
            for n in names
        )
        + f". Runtime {result['seconds']:.0f} s.\n\n",
    ]
    noise = set(result.get("rounding_noise", ()))

    def cell(values: dict[str, dict[str, float]], layer: str, s: str) -> str:
        text = f"{abs(values[layer][s]):.3g}"
        return f"({text})" if f"{layer}.{s}" in noise else text

    headers = ["target layer"] + [f"{n} Z-{s}" for n in names for s in ("mean", "std", "max")]
    rows = []
    for layer in result["target_layers"]:
        rows.append([layer] + [cell(models[n]["step"], layer, s) for n in names for s in STATS])
    out.append(markdown_table(headers, rows))
    if noise:
        out.append(
            "\n(In parentheses: the last linear layer's mean, which plain SGD on cross-entropy "
            "cannot move: the gradient w.r.t. the logits sums to zero over classes. Its Z is "
            "float rounding noise over the denominator; `warmup-paper` does not score it.)\n"
        )
    out.append(
        f"\nHonest model at the last warm-up step ({models['honest']['steps']}), for the "
        "paper's remark that benign Z-scores stay small:\n\n"
    )
    out.append(
        markdown_table(
            ["target layer", "Z-mean", "Z-std", "Z-max"],
            [
                [layer] + [cell(models["honest"]["last_step"], layer, s) for s in STATS]
                for layer in result["target_layers"]
            ],
        )
    )
    return "".join(out)


def plot(result: dict[str, Any], path: str) -> None:
    """Largest |Z| per target layer at the tabulated step (log), per model; threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = set(result.get("rounding_noise", ()))
    layers, models = result["target_layers"], result["models"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(models)
    for i, (name, m) in enumerate(models.items()):
        peaks = [
            max(
                (abs(m["step"][layer][s]) for s in STATS if f"{layer}.{s}" not in noise),
                default=0.0,
            )
            for layer in layers
        ]
        ax.bar([x + i * width for x in range(len(layers))], peaks, width, label=name)
    ax.axhline(result["threshold"], color="k", ls="--", lw=1, label="threshold")
    ax.set_yscale("log")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(layers))])
    ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"max |Z| at warm-up step {result['config']['step']} (log)")
    ax.set_title(f"Table 1, detector {result['config']['detector']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
