"""False-positive rate of every detector and the Guard on honest FedAvg global models.

    python benchmarks/false_positives.py [--quick] [--seeds 0 1] [--rounds 20] [--every 2]

Writes benchmarks/results/false_positives{,_quick}.json and .md (issue 4, must show 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import false_positives as fp  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402
from gradguard.experiments.honest_corpus import CorpusConfig  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds per run (30 models)")
    p.add_argument("--every", type=int, default=None, help="snapshot every N rounds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    rounds = args.rounds or (2 if args.quick else 20)
    every = args.every or (1 if args.quick else 2)
    corpus = CorpusConfig(dataset=args.dataset, seeds=tuple(args.seeds), rounds=rounds, every=every)
    result = fp.run(fp.FalsePositiveConfig(corpus=corpus))
    name = "false_positives_quick" if args.quick else "false_positives"
    js, md = write_results(name, result, fp.to_markdown(result), Path(__file__).parent / "results")
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
