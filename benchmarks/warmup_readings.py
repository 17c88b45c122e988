"""Which reading of the seed paper's warm-up Z-score reproduces its Fig. 3 and Table 1?

    python benchmarks/warmup_readings.py [--quick] [--rounds 30] [--dataset digits]

Writes benchmarks/results/warmup_readings{,_quick}.json (raw warm-up statistics of every
round and fished model, and every reading's numbers) and .md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import warmup_readings as wr  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 rounds, fishing at rounds 2 and 10")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--limit", type=int, default=None, help="training examples kept")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    rounds = args.rounds or (12 if args.quick else 30)
    fish = tuple(r for r in (2, 10, 30) if r <= rounds)
    cfg = wr.ReadingsConfig(dataset=args.dataset, limit=args.limit, rounds=rounds, fish_rounds=fish)
    raw = wr.collect(cfg)
    rows = wr.evaluate(raw)
    name = "warmup_readings_quick" if args.quick else "warmup_readings"
    js, md = write_results(
        name,
        {**raw, "readings": rows},
        wr.to_markdown(raw, rows),
        Path(__file__).parent / "results",
    )
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
