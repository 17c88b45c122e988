"""The same federation in-process, in Flower's simulation engine and in NVFlare's simulator.

Two federations, each engine running exactly the same :class:`~gradguard.bench.scenario.Scenario`:

* the demo's (digits, mlp, 4 clients, 10 rounds, imprint in rounds 3 and 5), three runs
  (attack-free, attacked unguarded, attacked guarded): wall time, images leaked,
  abstentions, final accuracy;
* a larger one (8 clients, 30 rounds, guarded, attacked in rounds 3 and 5), where fixed
  costs amortise.

Per-round time is the marginal cost of a round: every federation is also run for one round
(same clients, attack-free, same guard setting), and ``per round = (T(R) - T(1)) / (R - 1)``,
``fixed = T(1) - per round`` (start-up: Ray or NVFlare's processes, imports, data).

    python benchmarks/engines.py [--engines inprocess,flower,nvflare] [--large-engines
        inprocess,flower] [--tag before] [--quick]

Writes benchmarks/results/engines[_TAG].json and .md. Wall times on a shared 2-core machine
are noisy (one run each).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def _runner(engine: str):
    if engine == "inprocess":
        return run_inprocess
    if engine == "flower":
        from gradguard.integrations.flower.simulation import run_flower

        return run_flower
    from gradguard.integrations.nvflare.engine import run_nvflare

    return run_nvflare


def _timed(engine: str, sc: Scenario, guarded: bool, attacked: bool):
    t0 = time.perf_counter()
    result = _runner(engine)(sc, guarded=guarded, attacked=attacked)
    return result, time.perf_counter() - t0


def _row(engine: str, name: str, sc: Scenario, r, seconds: float) -> dict:
    return {
        "engine": engine,
        "run": name,
        "clients": sc.clients,
        "rounds": sc.rounds,
        "seconds": round(seconds, 2),
        "leaked": r.leaked,
        "abstentions": r.abstentions,
        "final_accuracy": round(r.final_accuracy, 4),
    }


def _per_round(total: float, one: float, rounds: int) -> dict:
    per = (total - one) / (rounds - 1)
    return {
        "one_round_s": round(one, 2),
        "per_round_s": round(per, 3),
        "fixed_s": round(one - per, 2),
    }


def measure(engines: list[str], large_engines: list[str], demo: Scenario, large: Scenario):
    from gradguard.bench.setup import build

    build(demo)  # first-use imports and data of this process: not an engine's fixed cost
    rows, rates = [], []
    for engine in engines:
        _, one = _timed(engine, replace(demo, rounds=1, attack_rounds=(1,)), False, False)
        totals = {}
        for name, guarded, attacked in PLAN:
            r, seconds = _timed(engine, demo, guarded, attacked)
            rows.append(_row(engine, name, demo, r, seconds))
            totals[name] = seconds
            print(rows[-1], flush=True)
        rates.append(
            {
                "engine": engine,
                "federation": f"demo ({demo.clients} clients x {demo.rounds} rounds, attack-free)",
                **_per_round(totals["attack-free"], one, demo.rounds),
            }
        )
    for engine in large_engines:
        _, one = _timed(engine, replace(large, rounds=1, attack_rounds=(1,)), True, False)
        r, seconds = _timed(engine, large, True, True)
        rows.append(_row(engine, "guarded (large)", large, r, seconds))
        print(rows[-1], flush=True)
        rates.append(
            {
                "engine": engine,
                "federation": f"large ({large.clients} clients x {large.rounds} rounds, guarded)",
                **_per_round(seconds, one, large.rounds),
            }
        )
    return rows, rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="inprocess,flower,nvflare")
    ap.add_argument("--large-engines", default="inprocess,flower")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. before)")
    ap.add_argument("--quick", action="store_true", help="4 rounds, attack in round 3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    logging.getLogger("gradguard").addHandler(logging.NullHandler())
    logging.getLogger("gradguard").propagate = False
    demo = Scenario()
    large = Scenario(clients=8, rounds=30)
    if args.quick:
        demo = replace(demo, rounds=4, attack_rounds=(3,))
        large = replace(large, rounds=6)
    engines = [e for e in args.engines.split(",") if e]
    large_engines = [e for e in args.large_engines.split(",") if e]
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    if "flower" in engines + large_engines:
        from gradguard.integrations.flower.simulation import ray_session

        with ray_session():
            rows, rates = measure(engines, large_engines, demo, large)
    else:
        rows, rates = measure(engines, large_engines, demo, large)
    out = {
        "demo": demo.summary(),
        "large": large.summary(),
        "cpus": len(os.sched_getaffinity(0)),
        "total_seconds": round(time.perf_counter() - start, 1),
        "loadavg_1min": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "runs": rows,
        "per_round": rates,
    }
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    stem = "engines" + (f"_{args.tag}" if args.tag else "")
    (res / f"{stem}.json").write_text(json.dumps(out, indent=2))
    lines = [
        "| run | engine | clients x rounds | wall s | leaked | abstentions | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['engine']} | {row['clients']} x {row['rounds']} | "
            f"{row['seconds']:.1f} | {row['leaked']} | {row['abstentions']} | "
            f"{row['final_accuracy']:.3f} |"
        )
    lines += [
        "",
        "| engine | federation | 1-round run s | per round s | fixed s |",
        "|---|---|---|---|---|",
    ]
    for r in rates:
        lines.append(
            f"| {r['engine']} | {r['federation']} | {r['one_round_s']:.1f} | "
            f"{r['per_round_s']:.3f} | {r['fixed_s']:.1f} |"
        )
    lines.append(
        f"\nper round = (T(R) - T(1)) / (R - 1); fixed = T(1) - per round. One run each on a "
        f"shared {out['cpus']}-core machine (noisy; 1-minute load average "
        f"{out['loadavg_1min'][0]} at the start, {out['loadavg_1min'][1]} at the end). "
        "Command: `python benchmarks/engines.py" + (f" --tag {args.tag}" if args.tag else "") + "`."
    )
    (res / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
