"""The same federation in-process and in Flower's simulation engine, side by side.

Runs the demo scenario (digits, mlp, 4 clients, 10 rounds, imprint in rounds 3 and 5) three
ways (attack-free, attacked unguarded, attacked guarded) on each engine and records wall
time, images leaked, abstentions and final accuracy. ``--quick``: 4 rounds, attack in round 3.

    python benchmarks/engines.py [--quick]

Writes benchmarks/results/engines.json and engines.md. Wall times on a shared machine are
noisy; the Flower column includes Ray start-up (once per engine, not per run) and actor
start-up (once per run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradguard.bench.inprocess import run_inprocess  # noqa: E402
from gradguard.bench.scenario import Scenario  # noqa: E402

PLAN = (("attack-free", False, False), ("unguarded", False, True), ("guarded", True, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard").addHandler(logging.NullHandler())
    logging.getLogger("gradguard").propagate = False
    sc = Scenario()
    if args.quick:
        sc = replace(sc, rounds=4, attack_rounds=(3,))
    from rich.progress import Progress

    from gradguard.integrations.flower.simulation import ray_session, run_flower

    rows = []
    with Progress() as bar:
        task = bar.add_task("engines", total=2 * len(PLAN))
        for name, guarded, attacked in PLAN:
            t0 = time.perf_counter()
            r = run_inprocess(sc, guarded=guarded, attacked=attacked)
            rows.append(_row("inprocess", name, r, time.perf_counter() - t0))
            bar.advance(task)
        t_ray = time.perf_counter()
        with ray_session():
            ray_start = time.perf_counter() - t_ray
            for name, guarded, attacked in PLAN:
                t0 = time.perf_counter()
                r = run_flower(sc, guarded=guarded, attacked=attacked)
                rows.append(_row("flower-simulation", name, r, time.perf_counter() - t0))
                bar.advance(task)
    out = {"scenario": sc.summary(), "ray_start_seconds": round(ray_start, 2), "runs": rows}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "engines.json").write_text(json.dumps(out, indent=2))
    lines = [
        "| run | engine | wall s | leaked | abstentions | final accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, _ in PLAN:
        for row in rows:
            if row["run"] == name:
                lines.append(
                    f"| {name} | {row['engine']} | {row['seconds']:.1f} | "
                    f"{row['leaked']} | {row['abstentions']} | "
                    f"{row['final_accuracy']:.3f} |"
                )
    lines.append(
        f"\nRay start-up (once for the three Flower runs): {ray_start:.1f} s. "
        f"Scenario: {sc.clients} clients, {sc.rounds} rounds, {sc.attack} in rounds "
        f"{', '.join(map(str, sc.attack_rounds))}. Shared 2-core machine: noisy."
    )
    (res / "engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(engine: str, name: str, r, seconds: float) -> dict:
    return {
        "engine": engine,
        "run": name,
        "seconds": round(seconds, 2),
        "leaked": r.leaked,
        "abstentions": r.abstentions,
        "final_accuracy": round(r.final_accuracy, 4),
        "accuracy": [round(x.accuracy, 4) for x in r.rounds],
    }


if __name__ == "__main__":
    main()
