"""Which reading of the seed paper's warm-up Z-score reproduces its Fig. 3 and Table 1?

    python benchmarks/warmup_readings.py [--quick] [--rounds 30] [--dataset digits]
    python benchmarks/warmup_readings.py --calibrate | --matrix | --false-positives

Writes benchmarks/results/warmup_readings{,_quick}.json (raw warm-up statistics of every
round and fished model, and every reading's numbers) and .md. The other modes run the two
implemented readings (``warmup``, ``warmup-paper``) through the project's own corpora:
``--calibrate`` scores ``warmup-paper`` on detect/calibrate.py's honest corpus (seeds 1000,
1001; no attack) -> calibrate_warmup_paper.json; ``--matrix`` runs the detection matrix
(seed 0) -> detection_matrix_warmup_readings.json; ``--false-positives`` the honest
evaluation corpus (seed 0) -> false_positives_warmup_readings.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.experiments import warmup_readings as wr  # noqa: E402
from gradguard.experiments.harness import write_results  # noqa: E402

OUT = Path(__file__).parent / "results"
READINGS = ("warmup", "warmup-paper")


def calibrate() -> dict:
    """Largest honest |Z| of warmup-paper per model of calibrate.py's corpus (no attack)."""
    import math

    from gradguard.detect import Context, get_detector
    from gradguard.detect.calibrate import MARGIN, CorpusSpec, honest_corpus

    det = get_detector("warmup-paper", {"warmup-paper.z": math.inf})
    rows = []
    for m in honest_corpus(CorpusSpec(seeds=(1000, 1001))):
        v = det.inspect(m.state, Context(m.template, m.data, m.previous))
        rows.append(
            {"model": m.model, "norm": m.norm, "partition": m.partition, "seed": m.seed}
            | {"round": m.round, "max_z": v.metadata["max_z"]}
        )
    peak = max(r["max_z"] for r in rows)
    return {"rows": rows, "max": peak, "proposed": MARGIN * peak}


def matrix() -> dict:
    from gradguard.experiments import detection_matrix as dm

    return dm.run(dm.MatrixConfig(seeds=(0,), detectors=READINGS))


def false_positives() -> dict:
    from gradguard.experiments import false_positives as fp

    return fp.run(fp.FalsePositiveConfig(detectors=READINGS))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 rounds, fishing at rounds 2 and 10")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--limit", type=int, default=None, help="training examples kept")
    p.add_argument("--threads", type=int, default=1)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--calibrate", action="store_true", help="warmup-paper's honest maxima")
    mode.add_argument("--matrix", action="store_true", help="detection matrix, both readings")
    mode.add_argument("--false-positives", action="store_true", help="honest corpus, both")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("gradguard").setLevel(logging.ERROR)
    for flag, run, name in (
        (args.calibrate, calibrate, "calibrate_warmup_paper"),
        (args.matrix, matrix, "detection_matrix_warmup_readings"),
        (args.false_positives, false_positives, "false_positives_warmup_readings"),
    ):
        if flag:
            path = OUT / f"{name}.json"
            path.write_text(json.dumps(run(), indent=1, default=str))
            print(f"wrote {path}")
            return 0
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
        OUT,
    )
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
