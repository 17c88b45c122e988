"""False-positive rate of every detector and the default Guard on the honest corpus.

    python benchmarks/false_positives.py [--quick] [--fill-reversed] [--detectors exposure]

Trains the evaluation and diverged runs not cached yet (runs/corpus/), scores every
snapshot, and writes benchmarks/results/false_positives{,_quick}.{json,md}: rates per
detector, flags per family / optimiser / data set / partition / stage, and how the
deliberately diverged runs are classified.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import false_positives as fp  # noqa: E402
from gradguard.experiments import honest_corpus as hc  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits, mlp + convnet, 2 rounds")
    p.add_argument("--cache", type=Path, default=None, help="corpus cache folder")
    p.add_argument(
        "--fill-reversed",
        action="store_true",
        help="only score the runs already trained, last to first, into the outcome cache (a "
        "second process beside a normal run), writing no results",
    )
    p.add_argument(
        "--detectors",
        nargs="+",
        default=None,
        help="only these detectors (and the default Guard): false_positives_<detectors>.{json,md}",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)
    spec = hc.QUICK if args.quick else hc.CorpusSpec()
    cache = args.cache or (hc.CACHE.with_name("corpus-quick") if args.quick else hc.CACHE)
    runs = hc.corpus_runs("evaluation", spec)
    if args.fill_reversed:
        fp.run(runs[::-1], cache, args.detectors, only_built=True)
        return 0
    result = fp.run(runs, cache, args.detectors)
    diverged_runs = hc.corpus_runs("diverged", spec)
    if args.quick:
        diverged_runs = diverged_runs[:1]
    div = fp.run(diverged_runs, cache, args.detectors)
    div["classified"] = fp.classify_diverged(div["models"])
    name = "false_positives_quick" if args.quick else "false_positives"
    if args.detectors:
        name += "_" + "-".join(args.detectors)
    payload = {**result, "diverged": div}
    js, md = write_results(
        name, payload, fp.to_markdown(result, div), Path(__file__).parent / "results"
    )
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
