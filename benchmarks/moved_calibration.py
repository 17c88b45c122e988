"""Honest round pairs of the corpus through the ``moved`` check: the largest lone-unit rate
of moved units per batch size, per family (calibration of ``moved.lone{16,32,64}``).

    python benchmarks/moved_calibration.py [--parts calibration evaluation diverged]

Reads runs/corpus (trained runs only, nothing is written there); writes
benchmarks/results/moved_calibration.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.detect.base import Context  # noqa: E402
from gradguard.detect.moved import MovedUnits, row_movement  # noqa: E402
from gradguard.experiments import honest_corpus as hc  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["calibration", "evaluation"])
    p.add_argument("--cache", type=Path, default=hc.CACHE)
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    check = MovedUnits()
    rows = []
    for part in args.parts:
        runs = [r for r in hc.corpus_runs(part) if (args.cache / r.name / "meta.json").exists()]
        for m in hc.models(runs, args.cache):
            if m.previous is None:
                continue
            ctx = Context(m.template, m.data, m.previous)
            start = time.perf_counter()
            findings, meta = check.judge(m.state, m.previous, ctx)
            took = time.perf_counter() - start
            ratio = max(
                (float(row_movement(m.state, m.previous, k).max()) for k in meta["units"]),
                default=0.0,
            )
            rows.append(
                {
                    "key": m.key,
                    "model": m.run.model,
                    "dataset": m.run.dataset,
                    "optimiser": m.run.optimiser,
                    "round": m.round,
                    "moved_units": meta["units"],
                    "max_ratio": ratio,
                    "values": {f.check: f.value for f in findings},
                    "score": max((f.value / f.threshold for f in findings), default=0.0),
                    "seconds": took,
                }
            )
            print(rows[-1], flush=True)
    checks = sorted({c for r in rows for c in r["values"]})
    worst = {c: max((r["values"].get(c, 0.0), r["key"]) for r in rows) for c in checks}
    lines = [
        "# moved: honest round pairs of the corpus",
        "",
        f"`python benchmarks/moved_calibration.py --parts {' '.join(args.parts)}`: "
        f"{len(rows)} pairs (each snapshot against the previous round's global model, "
        "round 1 against the fresh init).",
        "",
        "| check | honest max | where | threshold |",
        "|---|---|---|---|",
    ]
    for c in checks:
        lines.append(f"| {c} | {worst[c][0]:.4f} | {worst[c][1]} | {check.t[c.split('.')[1]]} |")
    flagged = [r["key"] for r in rows if r["score"] >= 1]
    lines += ["", f"flagged: {len(flagged)} {flagged}", ""]
    name = "moved_calibration"
    js, md = write_results(
        name, {"rows": rows, "worst": worst}, "\n".join(lines), Path(__file__).parent / "results"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
