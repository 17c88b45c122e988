"""The ``moved`` check and the default Guard on curious/convnet adaptive+bend+traps, with the
honest model as the last accepted one (as the frontier's ``guard`` column) and without.

    python benchmarks/moved_attacks.py [--spread 0 0.5]

Writes benchmarks/results/moved_attacks.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.bench.attack_round import run_attack  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.detect import Guard, GuardConfig  # noqa: E402
from gradguard.detect.base import Context  # noqa: E402
from gradguard.detect.moved import MovedUnits  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402

ADAPTIVE = dict(signs="binomial", sigma="honest", bias="honest", conv_mix=0.6, honest_channels=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    p.add_argument("--batches", nargs="+", type=int, default=[64, 16])
    p.add_argument("--spread", nargs="+", type=float, default=[0.0])
    p.add_argument("--name", default="moved_attacks")
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    rows = []
    for dataset in args.datasets:
        local = train_test(dataset, limit=1000, seed=0)[0]
        for batch in args.batches:
            for spread in args.spread:
                opts = dict(ADAPTIVE, traps=32, bend=0.9)
                if spread:
                    opts["spread"] = spread
                r = run_attack(
                    "curious",
                    dataset=dataset,
                    model="convnet",
                    batch_size=batch,
                    neurons=1000,
                    **opts,
                )
                received = {k: v.detach() for k, v in r.manipulated.state_dict().items()}
                honest = {k: v.detach() for k, v in r.honest.state_dict().items()}
                template = copy.deepcopy(r.honest)
                ctx = Context(template, local, honest)
                start = time.perf_counter()
                findings, meta = MovedUnits().judge(received, honest, ctx)
                took = time.perf_counter() - start
                out = {}
                for label, prev in (("guard", honest), ("guard-first", None)):
                    v = Guard(GuardConfig(), template=template, data=local).check(received, prev)
                    out[label] = {"malicious": bool(v.malicious), "score": float(v.score)}
                rows.append(
                    {
                        "dataset": dataset,
                        "batch": batch,
                        "spread": spread,
                        "leaked": r.leaked_fraction,
                        "moved_units": {k: v["units"] for k, v in meta.items()},
                        "moved": {f.check: round(f.value, 4) for f in findings},
                        "moved_score": max((f.value / f.threshold for f in findings), default=0),
                        "moved_seconds": took,
                        **out,
                    }
                )
                print(rows[-1], flush=True)
    lines = [
        "# moved: curious/convnet adaptive + bend 0.9 + traps 32",
        "",
        f"`python benchmarks/moved_attacks.py --spread {' '.join(map(str, args.spread))}`",
        "",
        "| data | batch | spread | leaked | moved units | moved score | guard | guard-first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, f = r["guard"], r["guard-first"]
        lines.append(
            f"| {r['dataset']} | {r['batch']} | {r['spread']} | {r['leaked']:.2f} | "
            f"{r['moved_units']} | {r['moved_score']:.2f} | "
            f"{g['score']:.3f}{' flagged' if g['malicious'] else ''} | "
            f"{f['score']:.3f}{' flagged' if f['malicious'] else ''} |"
        )
    write_results(args.name, {"rows": rows}, "\n".join(lines), Path(__file__).parent / "results")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
