"""The effective-vs-stealthy frontier: leakage against every detector as each disguise dial
of each attack family is turned (issue 8, deliverable 5).

    python benchmarks/frontier.py [--quick] [--dataset digits|fashion-mnist] [--seeds 0 1]

Writes benchmarks/results/frontier{,_quick}{,_<dataset>}.json, .md and .png (``--name``:
another name; ``--families`` / ``--only``: a subset of the points).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import frontier  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mlp families, two values per dial")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--families", nargs="+", default=None, help="only these family labels")
    p.add_argument(
        "--only", nargs="+", default=(), help="only these points: dial or dial=value (+ textbook)"
    )
    p.add_argument("--name", default=None, help="output name (default: frontier[_quick][_dataset])")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    families = frontier.default_families(args.dataset, args.quick)
    if args.families:
        families = tuple(f for f in families if f.label in args.families)
    config = frontier.FrontierConfig(
        families, tuple(args.seeds), quick=args.quick, only=tuple(args.only)
    )
    result = frontier.run(config)
    name = "frontier" + ("_quick" if args.quick else "")
    name += "" if args.dataset == "digits" else f"_{args.dataset}"
    name = args.name or name
    out = Path(__file__).parent / "results"
    js, md = write_results(name, result, frontier.to_markdown(result), out)
    frontier.plot(result, str(out / f"{name}.png"))
    print(f"wrote {js}, {md}, {out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
