"""``gradguard attack NAME``: run one client round against a manipulated model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gradguard.attacks import ATTACKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help=f"the attack: {', '.join(ATTACKS)}")
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded), fashion-mnist, mnist or a path (default: digits)",
    )
    parser.add_argument("--model", default="mlp", help="model from the zoo (default: mlp)")
    parser.add_argument("--norm", default=None, help="norm layers for resnet models")
    parser.add_argument("--batch-size", type=int, default=64, help="client batch (default 64)")
    parser.add_argument(
        "--bins", type=int, default=None, help="imprint bins (first linear layer width)"
    )
    parser.add_argument("--neurons", type=int, default=None, help="curious trap rows")
    parser.add_argument(
        "--measurement", default=None, help="imprint measurement: brightness, random or dct"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other attack option, e.g. --option iterations=300 (repeatable)",
    )
    parser.add_argument(
        "--local-steps",
        type=int,
        default=1,
        metavar="E",
        help="1 = FedSGD gradient; E > 1 = FedAvg delta after E SGD steps",
    )
    parser.add_argument("--lr", type=float, default=0.05, help="client learning rate (FedAvg)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--psnr-threshold",
        type=float,
        default=30.0,
        help="an image is leaked at this matched PSNR or more (default 30 dB)",
    )
    parser.add_argument(
        "--save-model",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the manipulated global model (safetensors)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a PNG grid: originals above reconstructions",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def run(args: argparse.Namespace) -> int:
    from gradguard.attacks.run import run_attack
    from gradguard.errors import GradguardError

    if args.name not in ATTACKS:
        raise GradguardError(f"unknown attack {args.name!r}; valid: {', '.join(ATTACKS)}")
    options = {
        k: v
        for k, v in (
            ("bins", args.bins),
            ("neurons", args.neurons),
            ("measurement", args.measurement),
        )
        if v is not None
    }
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GradguardError(f"--option wants KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = _parse(value.strip())
    result = run_attack(
        args.name,
        dataset=args.dataset,
        model=args.model,
        norm=args.norm,
        batch_size=args.batch_size,
        local_steps=args.local_steps,
        lr=args.lr,
        seed=args.seed,
        psnr_threshold=args.psnr_threshold,
        **options,
    )
    summary = result.summary()
    written = []
    if args.save_model is not None:
        from gradguard.models.io import save_state

        written.append(save_state(result.manipulated, args.save_model))
    if args.out is not None:
        from gradguard.viz import save_reconstruction_grid

        png = (
            args.out / f"{args.name}_{args.dataset}_{args.model}_b{args.batch_size}"
            f"_e{args.local_steps}.png"
        )
        title = (
            f"{args.name} on {args.model}/{args.dataset}, batch {args.batch_size}: "
            f"{result.leaked_fraction:.0%} leaked (>= {args.psnr_threshold:g} dB)"
        )
        written.append(
            save_reconstruction_grid(
                result.originals,
                result.reconstruction.images,
                result.match,
                png,
                threshold_db=args.psnr_threshold,
                title=title,
            )
        )
    if args.json:
        print(json.dumps(summary))
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    else:
        print(
            f"{args.name} on {args.model}/{args.dataset}, batch {args.batch_size}, "
            f"{'FedSGD' if args.local_steps == 1 else f'FedAvg {args.local_steps} steps'}: "
            f"leaked {result.match.leaked(args.psnr_threshold)}/{args.batch_size} "
            f"({result.leaked_fraction:.1%}) at >= {args.psnr_threshold:g} dB; "
            f"PSNR {result.psnr_mean:.1f} dB, SSIM {result.ssim_mean:.3f} (matched pairs), "
            f"{result.seconds:.2f} s"
        )
        for path in written:
            print(f"wrote {path}")
    return 0


def _parse(value: str):
    """``3`` -> int, ``0.5`` -> float, ``true``/``false`` -> bool, else the string."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
