"""The ``moved`` check on honest clients that skipped rounds: each snapshot of the long
high-learning-rate digits runs (mlp, convnet) against the global model 2, 3, 4 and 6 rounds
earlier (a client's last accepted model is that old when it was not sampled or abstained).

    python benchmarks/moved_gaps.py [--cache runs/moved-long]

Trains the runs of ``moved_calibration.py --long`` into ``--cache`` where missing; writes
benchmarks/results/moved_gaps.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from moved_calibration import long_runs  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from gradguard.detect.base import Context  # noqa: E402
from gradguard.detect.moved import MovedUnits  # noqa: E402
from gradguard.experiments import honest_corpus as hc  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402

GAPS = (2, 3, 4, 6)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("runs/moved-long"))
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    check = MovedUnits()
    runs = [r for r in long_runs() if r.dataset == "digits" and r.model in ("mlp", "convnet")]
    rows = []
    for m in hc.models(runs, args.cache):
        for gap in GAPS:
            if m.round - gap < 0:
                continue
            prev = load_file(args.cache / m.run.name / f"round{m.round - gap}.safetensors")
            findings, _ = check.judge(m.state, prev, Context(m.template, m.data, prev))
            score = max((f.value / f.threshold for f in findings), default=0.0)
            rows.append({"run": m.run.name, "round": m.round, "gap": gap, "score": score})
    lines = [
        "# moved on honest clients that skipped rounds (long high-lr digits runs)",
        "",
        "`python benchmarks/moved_gaps.py`: each snapshot against the global model `gap` "
        "rounds earlier; score >= 1 is a false alarm.",
        "",
        "| run | gap | pairs | flagged | max score |",
        "|---|---|---|---|---|",
    ]
    for run in sorted({r["run"] for r in rows}):
        for gap in GAPS:
            sel = [r for r in rows if r["run"] == run and r["gap"] == gap]
            if sel:
                flagged = sum(r["score"] >= 1 for r in sel)
                worst = max(r["score"] for r in sel)
                lines.append(f"| {run} | {gap} | {len(sel)} | {flagged} | {worst:.2f} |")
    write_results("moved_gaps", {"rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
