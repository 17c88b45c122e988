"""The abstention hazard under secure aggregation and the guarded client's cover (issue 10,
item 4), measured in-process and through Flower's real SecAgg+.

    python benchmarks/secagg_hazard.py            # in-process + Flower SecAgg+ rows
    python benchmarks/secagg_hazard.py --quick    # in-process rows only
    python benchmarks/secagg_hazard.py --amplification  # the amplification table alone

Writes ``benchmarks/results/secagg_hazard.json`` and ``secagg_hazard.md``. One round of
model inconsistency (:mod:`gradguard.experiments.secagg_hazard`): digits, mlp, 4 clients x
16, FedSGD at lr 2 (the server's choice: at lr 0.05 the imprint deltas fall under SecAgg+'s
rounding floor and no image survives Flower's protocol, docs/secagg.md), target client 0
(unguarded, the inner imprint model: a stand-in for a target that cannot see the attack).
In-process covers are seeded (``seed=1``) for a reproducible table; the Flower clients draw
theirs from the operating system, as a real client does.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradguard.detect import Guard, GuardConfig  # noqa: E402
from gradguard.experiments.secagg_hazard import (  # noqa: E402
    DISGUISES,
    HazardConfig,
    flower_case,
    inprocess_case,
    prepare,
)
from gradguard.fl.cover import SecureRefusal  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LR = 2.0


GAINS = (4.0, 10.0, 30.0, 100.0, 1000.0, 10000.0)


def _guard_says(template: nn.Module, data, model: nn.Module, detectors=None) -> dict[str, Any]:
    config = GuardConfig(detectors=detectors) if detectors else GuardConfig()
    v = Guard(config, template=copy.deepcopy(template), data=data).check(model.state_dict())
    return {"flagged": bool(v.malicious), "score": round(v.score, 3), "summary": v.summary()}


def amplification_row(disguise: str, gain: float) -> dict[str, Any]:
    """The target's images that leak through scale-1 covers when the server applies ``gain``
    by ``disguise`` (honest target: the per-row decoder; imprint target: the imprint
    decoder), and what the target's Guard says of the honest model so amplified: the
    ``scale`` check alone and the default Guard."""
    honest = prepare(HazardConfig(lr=LR, amplify=gain, disguise=disguise, honest_target=True))
    imprint = prepare(HazardConfig(lr=LR, amplify=gain, disguise=disguise))
    via_honest = inprocess_case(honest, "cover", seed=1)
    via_imprint = inprocess_case(imprint, "cover", seed=1)
    model, data = honest.sent[0], honest.batches[0]
    return {
        "disguise": disguise,
        "gain": gain,
        "honest_leaked": via_honest["target_leaked"],
        "honest_psnr": via_honest["target_psnr"],
        "imprint_leaked": via_imprint["target_leaked"],
        "scale": _guard_says(honest.template, data, model, ("scale",)),
        "guard": _guard_says(honest.template, data, model),
    }


def _bn_disguise(model: nn.Module, disguise: str, a: float) -> None:
    with torch.no_grad():
        if disguise == "stem BN gain x a":
            model.stem.norm.weight.mul_(a)
            model.stem.norm.bias.mul_(a)
        elif disguise == "stem conv / a (before BN: same function)":
            model.stem.conv.weight.div_(a)
            model.stem.norm.running_mean.div_(a)  # the same function in evaluation mode too
            model.stem.norm.running_var.div_(a * a)
        elif disguise == "last BN gain x a":
            block = model.layers[-1][-1]
            block.norm2.weight.mul_(a)
            block.norm2.bias.mul_(a)


def batchnorm_rows(gains=(10.0, 100.0, 1000.0)) -> list[dict[str, Any]]:
    """resnet (batch norm, digits): how much a batch-norm disguise multiplies the stem
    convolution's gradient (training mode, the client's batch of 16; no decoder here, so
    no images are counted) and whether ``scale`` flags it."""
    from gradguard.data import train_test
    from gradguard.models import build_model

    train, _ = train_test("digits")
    x, y = train.x[:16], train.y[:16]
    torch.manual_seed(0)
    template = build_model("resnet", train.image_shape, train.num_classes, norm="batch")

    def stem_grad(model: nn.Module) -> float:
        model = copy.deepcopy(model).train()
        loss = F.cross_entropy(model(x), y)
        return float(torch.autograd.grad(loss, model.stem.conv.weight)[0].norm())

    base = stem_grad(template)
    rows = []
    data = train.subset(range(64))
    for disguise in (
        "stem BN gain x a",
        "stem conv / a (before BN: same function)",
        "last BN gain x a",
    ):
        for a in gains:
            model = copy.deepcopy(template)
            _bn_disguise(model, disguise, a)
            rows.append(
                {
                    "disguise": disguise,
                    "gain": a,
                    "stem_gradient_x": round(stem_grad(model) / base, 3),
                    "scale": _guard_says(template, data, model, ("scale",)),
                }
            )
    return rows


LONG = (("mlp", None, 60), ("convnet", None, 60), ("resnet", "batch", 15))
OPTIMISERS = (
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    {"optimizer": "adam", "lr": 1e-3},
    {"optimizer": "adam", "lr": 1e-2},
    {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
)


def long_training_rows() -> list[dict[str, Any]]:
    """Honest models trained far longer than the corpus's (one client, 1000 digits, batch
    32, 60 epochs; resnet 15), scored by ``scale``: where honest growth goes past it."""
    from gradguard.data import train_test
    from gradguard.detect import get_detector
    from gradguard.detect.base import Context
    from gradguard.fl import LocalTraining, local_update
    from gradguard.models import build_model

    train, _ = train_test("digits", limit=1000)
    rows = []
    for name, norm, epochs in LONG:
        for opts in OPTIMISERS:
            torch.manual_seed(0)
            model = build_model(name, train.image_shape, train.num_classes, norm=norm)
            template = copy.deepcopy(model)
            update = local_update(model, train, LocalTraining(epochs=epochs, **opts))
            state = dict(model.state_dict())
            for k, d in update.as_delta().items():
                state[k] = state[k] + d.to(state[k].dtype)
            v = get_detector("scale").inspect(state, Context(template))
            rows.append(
                {
                    "model": name + (f"/{norm}" if norm else ""),
                    "optimiser": opts["optimizer"],
                    "lr": opts["lr"],
                    "epochs": epochs,
                    "flagged": v.malicious,
                    "values": {f.check: [round(f.value, 3), f.layer] for f in v.findings},
                }
            )
    return rows


def amplification(quick: bool = False) -> dict[str, Any]:
    gains = (10.0, 1000.0) if quick else GAINS
    rows = [amplification_row(d, g) for d in DISGUISES for g in gains]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k not in ("scale", "guard")}), flush=True)
    return {"rows": rows, "batchnorm": batchnorm_rows(), "long_training": long_training_rows()}


def run(quick: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    def add(label: str, row: dict[str, Any]) -> None:
        row = {"case": label, **row}
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = prepare(HazardConfig(lr=LR))
    verdicts = {c: {"flagged": f, "summary": s} for c, (f, s) in base.verdicts().items()}
    add("non-targets train (unguarded)", inprocess_case(base, "train"))
    add("non-targets drop out (guarded, today)", inprocess_case(base, "drop"))
    add("non-targets cover (guarded, scale 1)", inprocess_case(base, "cover", seed=1))
    add("1 of 3 covers, 2 train", inprocess_case(base, "cover", seed=1, guarded=1))
    add("1 of 3 drops, 2 train", inprocess_case(base, "drop", guarded=1))
    for k in (16, 256):
        add(f"cover, server averages {k} repeated rounds", inprocess_case(base, "cover", k, 1))
    for gain in (100.0, 1000.0, 10000.0):
        r = prepare(HazardConfig(lr=LR, amplify=gain))
        add(f"target's gradient x{gain:g}, cover scale 1", inprocess_case(r, "cover", seed=1))
    r = prepare(HazardConfig(lr=LR, amplify=1000.0, refusal=SecureRefusal(scale=10.0)))
    add("target's gradient x1000, cover scale 10", inprocess_case(r, "cover", seed=1))
    honest = prepare(HazardConfig(lr=LR, honest_target=True))
    add("target gets the honest model; non-targets drop", inprocess_case(honest, "drop"))
    add("target gets the honest model; non-targets cover", inprocess_case(honest, "cover", seed=1))
    amplified = amplification(quick)
    if not quick:
        from gradguard.integrations.flower.simulation import ray_session

        with ray_session():
            for label, behaviour, threshold, sybil in (
                ("non-targets train", "train", 2, False),
                ("non-targets drop, Flower's threshold (all)", "drop", 1.0, False),
                ("non-targets drop, threshold 2", "drop", 2, False),
                ("non-targets drop, Flower's threshold, server adds 1 sybil", "drop", 1.0, True),
                ("non-targets drop, threshold 2, server adds 1 sybil", "drop", 2, True),
                ("non-targets cover, threshold 2, server adds 1 sybil", "cover", 2, True),
                ("non-targets cover, Flower's threshold (all)", "cover", 1.0, False),
            ):
                add(label, flower_case(base, behaviour, threshold, sybil))
            loud = prepare(HazardConfig(lr=LR, amplify=1000.0))
            for behaviour in ("drop", "cover"):
                tail = f"non-targets {behaviour}, threshold 2, 1 sybil"
                row = flower_case(honest, behaviour, 2, True)
                add(f"target gets the honest model; {tail}", row)
                add(f"target's gradient x1000; {tail}", flower_case(loud, behaviour, 2, True))
    return {
        "setup": {
            "dataset": "digits",
            "model": "mlp",
            "clients": 4,
            "batch_size": 16,
            "lr": LR,
            "target": 0,
            "protocol": "fedsgd",
        },
        "verdicts": verdicts,
        "amplification": amplified,
        "rows": rows,
    }


def _reason(summary: str) -> str:
    """A flagged verdict's first reason (after the exposure sentence it leads with)."""
    return summary.split("; ", 1)[1] if summary.startswith("this round") else summary


def amplification_markdown(amp: dict[str, Any]) -> list[str]:
    lines = [
        "## Amplifying the target's gradient, and the `scale` check",
        "",
        "The server applies a gain to the target's `mlp` by one of the disguises "
        "(`gradguard/experiments/secagg_hazard.py`, `DISGUISES`); every non-target covers at "
        "scale 1 (in-process, covers seeded). *Honest*: the target gets the honest model so "
        "amplified and the server runs the per-row decoder `dW_i / db_i` on the aggregate's "
        "`fc1`; *imprint*: the target gets the imprint model so amplified (the imprint "
        "decoder). Verdicts are the target's own on the honest amplified model: the `scale` "
        "check alone and the default Guard (which includes it).",
        "",
        "| disguise | gain | honest: images >= 30 dB (of 16) | PSNR mean | imprint: images "
        "| `scale` (after health) | score | default Guard | first reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in amp["rows"]:
        reason = _reason(r["guard"]["summary"])[:90].replace("|", "/")
        lines.append(
            f"| {r['disguise']} | x{r['gain']:g} | {r['honest_leaked']} | {r['honest_psnr']} "
            f"| {r['imprint_leaked']} | {'flagged' if r['scale']['flagged'] else 'accepted'} "
            f"| {r['scale']['score']} | {'flagged' if r['guard']['flagged'] else 'accepted'} "
            f"| {reason} |"
        )
    lines += [
        "",
        "resnet (batch norm), fresh, digits: the stem convolution's gradient (training mode, "
        "batch 16) over the undisguised model's, and the `scale` check:",
        "",
        "| disguise | gain | stem gradient x | `scale` (after health) | score |",
        "|---|---|---|---|---|",
    ]
    for r in amp["batchnorm"]:
        lines.append(
            f"| {r['disguise']} | x{r['gain']:g} | {r['stem_gradient_x']} "
            f"| {'flagged' if r['scale']['flagged'] else 'accepted'} | {r['scale']['score']} |"
        )
    if not amp.get("long_training"):
        return lines
    lines += [
        "",
        "Honest models trained far longer than the corpus's 6 rounds x 2 epochs (one client, "
        "1000 digits, batch 32), scored by `scale` (value; thresholds: grown 25, shrunk 2.47):",
        "",
        "| model | optimiser | lr | epochs | grown (layer) | shrunk | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in amp["long_training"]:
        v = r["values"]
        lines.append(
            f"| {r['model']} | {r['optimiser']} | {r.get('lr', '')} | {r['epochs']} "
            f"| {v['scale.grown'][0]} ({v['scale.grown'][1]}) "
            f"| {v['scale.shrunk'][0]} | {'**yes**' if r['flagged'] else 'no'} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Abstention hazard under secure aggregation (`python benchmarks/secagg_hazard.py`)",
        "",
        "| engine | case | round completed | cosine (aggregate, target's update) "
        "| target's images >= 30 dB (of 16) | PSNR mean | other clients' images |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['engine']} | {r['case']} | {'yes' if r['completed'] else '**no**'} "
            f"| {r['cosine'] if r['cosine'] is not None else '-'} "
            f"| {r['target_leaked'] if r['target_leaked'] is not None else '-'} "
            f"| {r['target_psnr'] if r['target_psnr'] is not None else '-'} "
            f"| {r.get('others_leaked', '-')} |"
        )
    lines += ["", "Default-Guard verdicts on the models sent:", ""]
    for c, v in report["verdicts"].items():
        lines.append(f"- client {c}: {'flagged' if v['flagged'] else 'accepted'}: {v['summary']}")
    lines += ["", *amplification_markdown(report["amplification"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="in-process rows only")
    p.add_argument(
        "--amplification",
        action="store_true",
        help="only the amplification table (secagg_amplification.{json,md})",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard").setLevel(logging.ERROR)
    if args.amplification:
        amp = amplification()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "secagg_amplification.json").write_text(json.dumps(amp, indent=1))
        title = "# Amplification under secure aggregation "
        title += "(`python benchmarks/secagg_hazard.py --amplification`)"
        md = [title, "", *amplification_markdown(amp)[2:]]
        (RESULTS / "secagg_amplification.md").write_text("\n".join(md) + "\n")
        return
    report = run(args.quick)
    name = "secagg_hazard_quick" if args.quick else "secagg_hazard"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
