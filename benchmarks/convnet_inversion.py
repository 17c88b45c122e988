"""Do convolutions protect the image behind a trap row? fc1's input of a convnet inverted
to the image with the received model's own Jacobian (Gauss-Newton), honest and attacked.

    python benchmarks/convnet_inversion.py [--dataset digits] [--samples 8] [--iterations 15]

A row of fc1 that fires for one sample alone returns that sample's fc1 input exactly
(seed 000, A.1.1). Per model: the linear readout of detect/readout.py (what the audit's
``exposure.readout`` reads) and Gauss-Newton from the mean image,
``x <- clamp(x + (J^T J + eps)^-1 J^T (f - f(x)), 0, 1)``, ``J`` the Jacobian of fc1's input
at ``x`` (PSNR per image, range [0, 1]; gradguard/attacks/inversion/feature_inversion.py).
With ``--honest-exposure``: the honest convnet's own FedSGD update at batch 16 and 64,
fresh (the frontier's honest model) and after the server's 1-epoch pretraining, every row
decoded (``dW_i / db_i``) and inverted to images, matched to the batch: one candidate per
sample (the frontier's fast count) and every row (digits only). Writes
benchmarks/results/convnet_inversion_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gradguard.attacks.inversion.feature_inversion import (  # noqa: E402
    gauss_newton,
    rows_exposure,
)
from gradguard.attacks.server.disguise import pretrain  # noqa: E402
from gradguard.bench.attack_round import run_attack  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.detect.readout import _features, image_readout  # noqa: E402
from gradguard.experiments.harness import markdown_table, write_results  # noqa: E402
from gradguard.fl.client import train_sgd  # noqa: E402
from gradguard.models import build_model  # noqa: E402

ADAPTIVE = dict(signs="binomial", sigma="honest", bias="honest", conv_mix=0.6, honest_channels=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return float(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-20))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--honest-exposure", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    train = train_test(args.dataset, limit=1000, seed=0)[0]
    x = train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:256]]
    center = x[64:].mean(0)
    torch.manual_seed(0)
    models = {
        "fresh convnet (width 1000)": build_model("convnet", train.image_shape, 10, width=1000),
        "trained convnet (1 epoch SGD)": train_sgd(
            build_model("convnet", train.image_shape, 10, width=64), train
        ),
    }
    for name, opts in (
        ("curious adaptive+traps 32", dict(ADAPTIVE, traps=32)),
        ("curious adaptive+bend 0.9+traps 32", dict(ADAPTIVE, traps=32, bend=0.9)),
    ):
        r = run_attack("curious", args.dataset, "convnet", batch_size=64, neurons=1000, **opts)
        models[f"{name} (leaks {r.leaked_fraction:.2f})"] = r.manipulated
    rows = []
    for name, model in models.items():
        state = {k: v.detach() for k, v in model.state_dict().items()}
        start = time.perf_counter()
        read = image_readout(model, state, x[64:], x[:64])
        with torch.no_grad():
            f = _features(model, state, "fc1", x[: args.samples])
        images = gauss_newton(model, state, "fc1", f, center, args.iterations)
        dbs = [psnr(images[n], x[n]) for n in range(args.samples)]
        rows.append(
            {
                "model": name,
                "readout_median_db": read.median if read else None,
                "newton_median_db": float(torch.tensor(dbs).median()),
                "newton_min_db": min(dbs),
                "samples": args.samples,
                "seconds": time.perf_counter() - start,
            }
        )
        print(rows[-1], flush=True)
    result = {"dataset": args.dataset, "iterations": args.iterations, "rows": rows}
    if args.honest_exposure:
        result["honest_exposure"] = []
        for batch, neurons in ((16, 256), (64, 1000)):
            r = run_attack("curious", args.dataset, "convnet", batch_size=batch, neurons=neurons)
            for epochs in (0, 1):
                honest = copy.deepcopy(r.honest)
                pretrain(honest, train_test(args.dataset)[1], epochs, seed=0)
                row = {"batch": batch, "width": neurons, "pretrain_epochs": epochs}
                for every in (False, True) if args.dataset == "digits" else (False,):
                    t = time.perf_counter()
                    e = rows_exposure(honest, r.originals, r.labels, 30.0, every, args.iterations)
                    key = "every_row" if every else "nearest"
                    row[key] = {
                        "leaked": e.leaked,
                        "candidates": e.candidates,
                        "inverted": e.inverted,
                        "seconds": time.perf_counter() - t,
                    }
                result["honest_exposure"].append(row)
                print(row, flush=True)
    md = [
        f"# fc1's input inverted to the image, {args.dataset} convnets\n",
        f"Linear readout (detect/readout.py) and Gauss-Newton from the mean image "
        f"({args.iterations} steps, the model's own Jacobian), PSNR on {args.samples} probe "
        "images.\n",
        markdown_table(
            ["model", "linear readout (median dB)", "Gauss-Newton median dB", "min dB", "s"],
            [
                [
                    r["model"],
                    f"{r['readout_median_db']:.1f}",
                    f"{r['newton_median_db']:.1f}",
                    f"{r['newton_min_db']:.1f}",
                    f"{r['seconds']:.1f}",
                ]
                for r in rows
            ],
        ),
    ]
    if "honest_exposure" in result:
        md.append(
            "\nHonest convnet (the frontier's honest model: fresh, width 256 at batch 16, 1000 at "
            "64; and after 1 epoch of the server's pretraining), its own FedSGD update, every "
            "fc1 row decoded (`dW_i / db_i`) and inverted by Gauss-Newton, Hungarian-matched "
            "(>= 30 dB). `nearest`: one candidate per sample, the row nearest its true fc1 "
            "input (the frontier's count); `every row`: all decoded rows inverted.\n"
        )

        def cell(h, key):
            if key not in h:
                return ""
            return f"{h[key]['leaked']}/{h['batch']} ({h[key]['seconds']:.1f} s)"

        md.append(
            markdown_table(
                ["batch", "pretrain epochs", "rows decoded", "nearest", "every row"],
                [
                    [
                        h["batch"],
                        h["pretrain_epochs"],
                        h["nearest"]["candidates"],
                        cell(h, "nearest"),
                        cell(h, "every_row"),
                    ]
                    for h in result["honest_exposure"]
                ],
            )
        )
    out = Path(__file__).parent / "results"
    write_results(f"convnet_inversion_{args.dataset}", result, "\n".join(md), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
