"""Detection matrix: every attack at several strengths, run for real, against every detector.

    python benchmarks/detection_matrix.py [--quick] [--seeds 0 1 2]

Writes benchmarks/results/detection_matrix{,_quick}.json, .md and .png (issue 4, must show 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import detection_matrix as dm  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mildest and strongest settings, 1 seed")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--attacks", nargs="+", default=None, help="only these attacks")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    settings = dm.default_settings(quick=args.quick)
    if args.attacks:
        settings = tuple(s for s in settings if s.attack in args.attacks)
    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else (0, 1, 2))
    result = dm.run(dm.MatrixConfig(settings=settings, seeds=seeds))
    name = "detection_matrix_quick" if args.quick else "detection_matrix"
    out = Path(__file__).parent / "results"
    js, md = write_results(name, result, dm.to_markdown(result), out)
    dm.plot(result, str(out / f"{name}.png"))
    print(md.read_text())
    print(f"wrote {js}, {md} and {out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
