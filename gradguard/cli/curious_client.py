"""``gradguard attack curious-client``: one federation with a maliciously curious client.

Kept apart from the server-attack runner of :mod:`gradguard.cli.attack`, which only hands
over ``curious-client``. Runs :func:`gradguard.experiments.curious_client.run_cell` and
reports the peers' reconstruction quality (matched PSNR / SSIM), the client's prior
(the mean image of its own data) and the global model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "curious-client"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"{NAME} (a client attacking its peers)")
    group.add_argument(
        "--aggregator",
        default="mean",
        help="server rule: mean, krum, multikrum, median or trimmed (default mean)",
    )
    group.add_argument(
        "--dp-noise",
        type=float,
        default=None,
        metavar="S",
        help="client DP: noise multiplier S with clip 1 (default: no DP)",
    )
    group.add_argument(
        "--upload",
        default="honest",
        help="what the curious client sends: honest, flip or outlier (default honest)",
    )
    group.add_argument("--iterations", type=int, default=None, help="inversion steps (default 150)")


def run(args: argparse.Namespace) -> int:
    from gradguard.attacks.client.uploads import UPLOADS
    from gradguard.cli import check_number, check_output_dir, usage_error
    from gradguard.experiments import curious_client as cc

    if args.aggregator not in cc.AGGREGATORS:
        raise usage_error(
            f"unknown aggregator {args.aggregator!r}; valid: {', '.join(cc.AGGREGATORS)}"
        )
    if args.upload not in UPLOADS:
        raise usage_error(f"unknown upload {args.upload!r}; valid: {', '.join(UPLOADS)}")
    check_number("--dp-noise", args.dp_noise, 0, strict=False)
    check_number("--iterations", args.iterations, 1, strict=False)
    check_output_dir("--out", args.out)
    settings = cc.CuriousSettings()
    if args.iterations is not None:
        settings = cc.with_settings(settings, iterations=args.iterations)
    cell = cc.Cell(args.dataset, args.aggregator, args.dp_noise, args.upload, args.seed)
    row = cc.run_cell(cell, settings)
    truth, recon, scored = row.pop("images")
    keys = (
        "dataset",
        "aggregator",
        "dp_noise",
        "upload",
        "seed",
        "psnr_mean",
        "psnr_best",
        "ssim_mean",
        "baseline_psnr",
        "baseline_ssim",
        "label_accuracy",
        "reconstructed",
        "aggregator_used_peers",
        "accuracy",
        "attacker_flagged_norm",
        "attacker_flagged_cosine",
        "seconds",
    )
    summary = {k: row[k] for k in keys}
    summary["reconstructed_images"] = int(len(recon))
    written = None
    if args.out is not None and scored is not None:
        from gradguard.viz import save_reconstruction_grid

        written = save_reconstruction_grid(
            truth,
            recon,
            scored,
            args.out / f"{NAME}_{args.dataset}_{args.aggregator}_{args.upload}.png",
            threshold_db=args.psnr_threshold,
            title=f"{NAME}: peers' images under {args.aggregator}",
        )
    if args.json:
        print(json.dumps(summary))
        if written:
            print(f"wrote {written}", file=sys.stderr)
        return 0
    dp = "no DP" if args.dp_noise is None else f"DP noise {args.dp_noise:g}"
    print(
        f"{NAME} under {args.aggregator} ({dp}, {args.upload} upload) on {args.dataset}: "
        f"{summary['reconstructed_images']} peer images, PSNR {summary['psnr_mean']:.2f} dB "
        f"(best {summary['psnr_best']:.2f}), SSIM {summary['ssim_mean']:.3f}; prior (mean "
        f"of own images) {summary['baseline_psnr']:.2f} dB; global accuracy "
        f"{summary['accuracy']:.3f}"
    )
    if written:
        print(f"wrote {written}")
    return 0
