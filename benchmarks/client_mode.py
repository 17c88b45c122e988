"""The client in training vs inference mode for the bench's attacks (issue 11; Valadi et al.,
seed 002): one FedSGD round of ``gradguard.bench.attack_round.run_attack`` per attack, the
client's model in ``train()`` (batch-norm batch statistics) and in ``eval()`` (running
statistics).

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/client_mode.py [--seeds 0,1]

Writes ``benchmarks/results/client_mode.{json,md}``. SEER's row is in ``seer.md`` (its score
is the property image, not ``leaked_fraction``). The zoo has no dropout, and only ``resnet``
has batch norm: on ``mlp`` and ``convnet`` the two modes give the same update.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gradguard.bench.attack_round import run_attack
from gradguard.experiments.harness import markdown_table, write_results

RESULTS = Path(__file__).parent / "results"
# (attack, model, batch size, options): digits, FedSGD
ROWS = (
    ("imprint", "mlp", 64, {"bins": 256}),
    ("curious", "mlp", 64, {"neurons": 1000}),
    ("imprint-arch", "resnet", 64, {"bins": 256}),
    ("fishing-class", "resnet", 64, {"iterations": 100}),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--attacks", default=",".join(r[0] for r in ROWS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    wanted = set(args.attacks.split(","))
    records = []
    for attack, model, batch, options in ROWS:
        if attack not in wanted:
            continue
        for seed in (int(s) for s in args.seeds.split(",")):
            for train_mode in (True, False):
                r = run_attack(
                    attack, "digits", model, None, batch, seed=seed,
                    client_train_mode=train_mode, **options,
                )  # fmt: skip
                rec = {
                    **r.summary(),
                    "seed": seed,
                    "client_mode": "train" if train_mode else "eval",
                    "options": options,
                }
                records.append(rec)
                print(json.dumps(rec), flush=True)
    table = markdown_table(
        ["attack", "model", "batch", "seed", "client mode", "leaked (>= 30 dB)", "PSNR dB", "s"],
        [
            [
                r["attack"],
                r["model"],
                r["batch_size"],
                r["seed"],
                r["client_mode"],
                f"{r['leaked_fraction']:.3f}",
                f"{r['psnr_mean']:.1f}",
                f"{r['seconds']:.1f}",
            ]
            for r in records
        ],
    )
    write_results(
        "client_mode",
        {"rows": records},
        "# Client in training vs inference mode (digits, FedSGD)\n\n" + table,
        RESULTS,
    )
    print(table)


if __name__ == "__main__":
    main()
