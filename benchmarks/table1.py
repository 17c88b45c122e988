"""Table 1 of seed 000: warm-up Z-scores per target layer under fishing, after one step.

    python benchmarks/table1.py [--quick] [--rounds 10] [--dataset digits]

    python benchmarks/table1.py --detector warmup-paper

``warmup``: the paper's section 5 read literally; ``warmup-paper``: the reading that best
matches its reported numbers; ``warmup+``: gradguard's light variant. Writes
benchmarks/results/table1{,_quick}[_DETECTOR].json, .md and .png.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import fishing_zscores as fz  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 honest rounds before fishing")
    p.add_argument("--rounds", type=int, default=None, help="honest FedAvg rounds first")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--limit", type=int, default=None, help="training examples kept")
    p.add_argument("--detector", default="warmup", help="warmup (literal), warmup-paper or warmup+")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    rounds = args.rounds or (2 if args.quick else 10)
    cfg = fz.Table1Config(
        dataset=args.dataset, limit=args.limit, pretrain_rounds=rounds, detector=args.detector
    )
    result = fz.run(cfg)
    name = "table1_quick" if args.quick else "table1"
    if args.detector != "warmup":
        name += "_" + args.detector.replace("+", "plus")
    out = Path(__file__).parent / "results"
    js, md = write_results(name, result, fz.to_markdown(result), out)
    fz.plot(result, str(out / f"{name}.png"))
    print(md.read_text())
    print(f"wrote {js}, {md} and {out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
