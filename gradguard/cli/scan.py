"""``gradguard scan MODEL_FILE --model NAME``: inspect a received model file for tampering.

Exit codes: 0 benign, 1 flagged or cannot verify, 2 usage error. ``--json`` prints the
Verdict. The file is read as safetensors or a weights-only PyTorch state dict, never by
unpickling arbitrary objects (gradguard.models.io).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

from gradguard.cli import usage_error
from gradguard.detect.registry import DEFAULT_DETECTORS
from gradguard.errors import GradguardError, ModelFileError

DEFAULT = ",".join(DEFAULT_DETECTORS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_file", metavar="MODEL_FILE", help="safetensors or PyTorch state dict")
    p.add_argument("--model", required=True, help="the client's model family (mlp, convnet, ...)")
    p.add_argument("--norm", default=None, help="norm of the client's model (batch, group, ...)")
    p.add_argument("--width", type=int, default=None, help="first-layer width (mlp, convnet)")
    p.add_argument(
        "--dataset",
        "--data",
        dest="dataset",
        default="digits",
        help="local data: a name (digits, fashion-mnist) or a path (default digits)",
    )
    p.add_argument("--samples", type=int, default=1000, help="local examples to use")
    p.add_argument("--previous", default=None, help="the last accepted global model file")
    p.add_argument(
        "--detectors",
        default=DEFAULT,
        help=f"comma-separated detectors (default {DEFAULT}; 'all' for every one): "
        "architecture, forensics, transmit-snr, dsnr, warmup (seed 000 s.5 read literally: "
        "the first step's change / 1e-8), warmup-paper (the reading that best matches the "
        "paper's reported Z-scores), warmup+ (gradguard's light variant)",
    )
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a threshold, e.g. warmup.z=1e7 (repeatable)",
    )
    p.add_argument("--policy", choices=("abstain", "warn", "strict"), default="abstain")
    p.add_argument("--json", action="store_true", help="print the Verdict as JSON")


def _local_data(spec: str, samples: int):
    """The local sample, read once per process (keyed by the path's modification time)."""
    path = Path(spec).expanduser()
    stamp = path.stat().st_mtime_ns if path.exists() else None
    return _cached_data(spec, samples, stamp)


@functools.lru_cache(maxsize=4)
def _cached_data(spec: str, samples: int, _stamp: int | None):
    from gradguard.data import train_test

    return train_test(spec, limit=samples)[0]


def run(args: argparse.Namespace) -> int:
    from gradguard.detect import DETECTORS, Guard, GuardConfig
    from gradguard.detect.base import unverifiable
    from gradguard.detect.thresholds import validate
    from gradguard.models import build_model
    from gradguard.models.io import load_state
    from gradguard.options import parse_pairs, split_items

    names = list(DETECTORS) if args.detectors == "all" else split_items(args.detectors)
    unknown = [d for d in names if d not in DETECTORS]
    if unknown or not names:
        raise usage_error(
            f"unknown detector(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(DETECTORS)}"
        )
    try:
        thresholds = parse_pairs(args.threshold, float, "KEY=NUMBER")
        validate(thresholds)
    except GradguardError as e:
        raise usage_error(f"--threshold: {e}") from None
    if args.samples < 1:
        raise usage_error("--samples must be positive")
    if args.width is not None and not 1 <= args.width <= 65536:
        raise usage_error(f"--width must be between 1 and 65536 (got {args.width})")
    for flag, f in (("MODEL_FILE", args.model_file), ("--previous", args.previous)):
        if f is not None and not Path(f).is_file():
            raise usage_error(f"{flag} {f}: no such file")
    try:
        train = _local_data(args.dataset, args.samples)
    except GradguardError as e:
        raise usage_error(str(e)) from None
    kw = {"width": args.width} if args.width else {}
    try:
        template = build_model(
            args.model, train.image_shape, train.num_classes, norm=args.norm, **kw
        )
    except (GradguardError, TypeError, ValueError, RuntimeError) as e:
        raise usage_error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)  # the verdict is printed
    start = time.perf_counter()
    guard = Guard(
        GuardConfig(policy=args.policy, detectors=tuple(names), thresholds=thresholds),
        template=template,
        data=train,
    )
    previous = None
    try:
        state = load_state(args.model_file, template=template)
        if args.previous:
            previous = load_state(args.previous, template=template)
    except ModelFileError as e:
        verdict = unverifiable("load", str(e), start, check="file", layer=str(args.model_file))
    else:
        verdict = guard.check(state, previous)
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=1))
    else:
        _print(verdict)
    return 0 if guard.allows(verdict) and not verdict.malicious else 1


def _print(verdict) -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    if not verdict.verified:
        con.print(f"[bold red]CANNOT VERIFY[/] {escape(verdict.summary())}")
    elif verdict.malicious:
        con.print(f"[bold red]FLAGGED[/] {escape(verdict.summary())}")
    else:
        exposure = verdict.metadata.get("exposure", {}).get("sentence", "")
        line = f"({verdict.detector}, {verdict.elapsed_s:.2f} s)" + (
            f"; {exposure}" if exposure else ""
        )
        con.print(f"[bold green]BENIGN[/] {escape(line)}")
    for f in verdict.findings:
        if f.flagged:
            con.print(escape(f"  - {f.check} [{f.layer}]: {f.message}"), highlight=False)
