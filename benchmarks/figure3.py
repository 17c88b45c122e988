"""Figure 3 of seed 000: honest warm-up Z-scores over FedAvg rounds, with accuracy.

    python benchmarks/figure3.py [--quick] [--rounds 30] [--dataset digits]
                                 [--detectors warmup warmup-paper]

``warmup``: the paper's section 5 read literally; ``warmup-paper``: the reading that best
matches its reported numbers; ``warmup+``: gradguard's light variant.

Writes benchmarks/results/figure3{,_quick}.json, .md and .png.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import warmup_profile as wp  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 rounds")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--limit", type=int, default=None, help="training examples kept")
    p.add_argument(
        "--detectors",
        nargs="+",
        default=list(wp.ProfileConfig().detectors),
        help="warm-up detectors",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    rounds = args.rounds or (5 if args.quick else 30)
    cfg = wp.ProfileConfig(
        dataset=args.dataset, limit=args.limit, rounds=rounds, detectors=tuple(args.detectors)
    )
    result = wp.run(cfg)
    name = "figure3_quick" if args.quick else "figure3"
    out = Path(__file__).parent / "results"
    js, md = write_results(
        name, result, wp.to_markdown(result).replace("figure3.png", f"{name}.png"), out
    )
    wp.plot(result, str(out / f"{name}.png"))
    print(md.read_text())
    print(f"wrote {js}, {md} and {out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
