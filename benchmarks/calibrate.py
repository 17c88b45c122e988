"""Calibrate detector thresholds on honest global models only.

    python benchmarks/calibrate.py [--quick]

Writes benchmarks/results/calibrate.{json,md}: per model the largest honest score of
every threshold key, the overall maxima and the proposed thresholds
(``max(floor, 2 x honest max)``, gradguard/detect/calibrate.py). No attack is scored.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from rich.progress import Progress

from gradguard.detect import DETECTORS, get_detector
from gradguard.detect.calibrate import CorpusSpec, honest_corpus, propose, score_model
from gradguard.detect.thresholds import DEFAULTS

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 3 clients, one seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument(
        "--report",
        action="store_true",
        help="rewrite the Markdown table from the saved JSON (after editing thresholds.py)",
    )
    args = ap.parse_args()
    name = "calibrate_quick" if args.quick else "calibrate"
    if args.report:
        write_table(json.loads((OUT / f"{name}.json").read_text()), name)
        return
    torch.set_num_threads(1)
    spec = (
        CorpusSpec(seeds=(1000,), rounds=2, clients=3, limit=600)
        if args.quick
        else CorpusSpec(seeds=tuple(args.seeds))
    )
    # inf thresholds: nothing is flagged, so every detector reports its raw maxima
    off = {k: math.inf for k in DEFAULTS}
    detectors = [get_detector(n, off) for n in DETECTORS]
    total = len(spec.seeds) * len(spec.models) * len(spec.partitions) * (spec.rounds + 1)
    rows, start = [], time.perf_counter()
    with Progress() as bar:
        task = bar.add_task("honest models", total=total)
        for m in honest_corpus(spec):
            scores = score_model(m, detectors)
            rows.append(
                {
                    "model": m.model,
                    "norm": m.norm,
                    "partition": m.partition,
                    "seed": m.seed,
                    "round": m.round,
                    "accuracy": m.accuracy,
                    "scores": scores,
                }
            )
            bar.advance(task)
    maxima: dict[str, float] = {}
    per_model: dict[str, dict[str, float]] = {}
    for r in rows:
        tag = r["model"] + (f"/{r['norm']}" if r["norm"] else "")
        for k, v in r["scores"].items():
            maxima[k] = max(maxima.get(k, -math.inf), v)
            per_model.setdefault(tag, {})[k] = max(per_model.get(tag, {}).get(k, -math.inf), v)
    proposed = propose(maxima)
    result = {
        "spec": {
            "seeds": spec.seeds,
            "rounds": spec.rounds,
            "clients": spec.clients,
            "models": len(rows),
        },
        "honest_max": maxima,
        "per_model": per_model,
        "proposed": proposed,
        "current": DEFAULTS,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    write_table(result, name)


def write_table(result: dict, name: str) -> None:
    """The Markdown table: honest maxima per model, proposal, and the thresholds in code."""
    per_model, maxima, proposed = result["per_model"], result["honest_max"], result["proposed"]
    spec = result["spec"]
    tags = sorted(per_model)
    lines = [
        f"# Threshold calibration ({spec['models']} honest global models, digits, seeds "
        f"{', '.join(map(str, spec['seeds']))})",
        "",
        "proposed = max(floor, 2 x honest max); in use = gradguard/detect/thresholds.py.",
        "",
        "| key | " + " | ".join(tags) + " | honest max | proposed | in use |",
        "|---|" + "---|" * (len(tags) + 3),
    ]
    for k in DEFAULTS:
        cells = [f"{per_model[t].get(k, float('nan')):.3g}" for t in tags]
        lines.append(
            f"| {k} | "
            + " | ".join(cells)
            + f" | {maxima.get(k, float('nan')):.3g} | {proposed.get(k, float('nan')):.3g} | "
            f"{DEFAULTS[k]:.3g} |"
        )
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
