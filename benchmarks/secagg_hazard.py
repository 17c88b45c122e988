"""The abstention hazard under secure aggregation and the guarded client's cover (issue 10,
item 4), measured in-process and through Flower's real SecAgg+.

    python benchmarks/secagg_hazard.py            # in-process + Flower SecAgg+ rows
    python benchmarks/secagg_hazard.py --quick    # in-process rows only

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradguard.detect import Guard  # noqa: E402
from gradguard.experiments.secagg_hazard import (  # noqa: E402
    HazardConfig,
    flower_case,
    inprocess_case,
    prepare,
)
from gradguard.fl.cover import SecureRefusal  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LR = 2.0


def amplified_honest_verdict(gain: float) -> dict[str, Any]:
    """Can the server amplify the target's gradient without the target seeing it? The honest
    model with the layer after ``fc1`` scaled by ``gain``, checked by the default Guard."""
    r = prepare(HazardConfig(lr=LR))
    model = copy.deepcopy(r.template)
    with torch.no_grad():
        model.fc2.weight.mul_(gain)
    verdict = Guard(template=copy.deepcopy(r.template), data=r.batches[0]).check(model.state_dict())
    return {"gain": gain, "flagged": bool(verdict.malicious), "summary": verdict.summary()}


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
    amplified = [amplified_honest_verdict(g) for g in (10.0, 100.0, 1000.0)]
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
        "amplified_honest_verdicts": amplified,
        "rows": rows,
    }


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
    lines += ["", "The honest model with `fc2` scaled (amplifying the target's gradient):", ""]
    for v in report["amplified_honest_verdicts"]:
        lines.append(f"- x{v['gain']:g}: {'flagged' if v['flagged'] else 'accepted'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="in-process rows only")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard").setLevel(logging.ERROR)
    report = run(args.quick)
    name = "secagg_hazard_quick" if args.quick else "secagg_hazard"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
