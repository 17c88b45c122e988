"""``gradguard scan MODEL_FILE --model NAME``: inspect a received model file for tampering.

``--model`` is a zoo family or the client's own class, ``package.module:Class`` imported
from ``--model-path DIR`` only, built with ``--model-arg KEY=VALUE`` keyword arguments.
Exit codes: 0 benign, 1 flagged or cannot verify, 2 usage error. ``--json`` prints the
Verdict (and ``template_hint`` when the file does not fit the template: a wrong ``--model``
or ``--dataset`` looks like a changed architecture). The file is read as safetensors or a
weights-only PyTorch state dict, never by unpickling arbitrary objects (gradguard.models.io).
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


EPILOG = """\
exit codes: 0 benign, 1 flagged or cannot verify, 2 usage error.

your own model: gradguard scan global.safetensors --model mynet.model:Net \\
    --model-path ~/my-fl-client --model-arg width=128 --dataset ~/my-images
imports Net from ~/my-fl-client/mynet/model.py (only from there) and builds Net(width=128)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model_file", metavar="MODEL_FILE", help="safetensors or PyTorch state dict")
    p.add_argument(
        "--model",
        required=True,
        help="the client's model: a zoo family (mlp, convnet, resnet, resnet18, vit-tiny) or "
        "your own class as package.module:Class (with --model-path)",
    )
    p.add_argument(
        "--model-path",
        default=None,
        metavar="DIR",
        help="the folder holding your own model's code; package.module:Class is imported "
        "from there only",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of your model class, a Python literal (e.g. width=128, "
        "channels=(16, 32)) or a string; repeatable",
    )
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
        "architecture, forensics, transmit-snr, scale (weight norms against a fresh init: "
        "amplification), dsnr, warmup (seed 000 s.5 read literally: "
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
    template = _template(args, train)
    logging.getLogger("gradguard.detect").setLevel(logging.ERROR)  # the verdict is printed
    start = time.perf_counter()
    try:
        guard = Guard(
            GuardConfig(policy=args.policy, detectors=tuple(names), thresholds=thresholds),
            template=template,
            data=train,
        )
    except GradguardError as e:
        raise usage_error(f"--model {args.model} with --dataset {args.dataset}: {e}") from None
    previous = state = None
    if args.previous:  # the client's own last model: unreadable is a usage error
        try:
            previous = load_state(args.previous, template=template)
        except ModelFileError as e:
            raise usage_error(f"--previous {e}") from None
    try:
        state = load_state(args.model_file, template=template)
    except ModelFileError as e:
        verdict = unverifiable("load", str(e), start, check="file", layer=str(args.model_file))
    else:
        verdict = guard.check(state, previous)
    hint = "" if not verdict.malicious or state is None else template_hint(state, template, args)
    if args.json:
        print(
            json.dumps({**verdict.to_dict(), **({"template_hint": hint} if hint else {})}, indent=1)
        )
    else:
        _print(verdict, hint)
    return 0 if guard.allows(verdict) and not verdict.malicious else 1


def _template(args: argparse.Namespace, train):
    from gradguard.models import build_model
    from gradguard.models.user import is_user_spec, load_user_model, parse_model_args

    try:
        if is_user_spec(args.model):
            if args.norm or args.width:
                raise GradguardError(
                    "--norm and --width shape zoo models; give your class's own arguments "
                    "with --model-arg KEY=VALUE"
                )
            return load_user_model(args.model, args.model_path, parse_model_args(args.model_arg))
        if args.model_arg or args.model_path:
            raise GradguardError(
                "--model-arg and --model-path are for your own class (--model package.module:Class)"
            )
        kw = {"width": args.width} if args.width else {}
        return build_model(args.model, train.image_shape, train.num_classes, norm=args.norm, **kw)
    except (GradguardError, TypeError, ValueError, RuntimeError) as e:
        raise usage_error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def template_hint(state, template, args: argparse.Namespace) -> str:
    """When ``state`` does not fit the template: how much of it does, and what a wrong
    ``--model``/``--dataset`` would explain ('' when names, shapes and dtypes fit)."""
    from gradguard.detect.architecture import restore_integers
    from gradguard.models.user import is_user_spec

    expected = template.state_dict()
    state = restore_integers(state, expected)[0]
    same = [k for k in expected if k in state and tuple(state[k].shape) == tuple(expected[k].shape)]
    if len(same) == len(expected) == len(state):
        return ""
    total = max(len(expected), len(state))
    share = len(same) / total if total else 0.0
    reshaped = [k for k in expected if k in state and k not in same]
    detail, other_inputs = "", False
    if reshaped:
        k = reshaped[0]
        detail = (
            f" (e.g. {k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in "
            "the template"
        )
        got, want = tuple(state[k].shape), tuple(expected[k].shape)
        first = k == next(iter(expected))
        other_inputs = first and got[1:] != want[1:]  # no server can change the client's data
        if other_inputs:
            detail += "; the first layer takes other inputs: is --dataset the model's data?"
        elif not is_user_spec(args.model) and k in ("fc1.weight", "conv1.weight"):
            detail += f"; a model of first-layer width {got[0]} is --width {got[0]}"
        detail += ")"
    where = (
        f"--model {args.model}"
        + (f" {' '.join('--model-arg ' + a for a in args.model_arg)}" if args.model_arg else "")
        + f", --dataset {args.dataset}"
    )
    if share < 0.5 or other_inputs:
        return (
            f"likely a template mistake: {len(same)} of {total} entries of the file fit "
            f"the template ({where}){detail}; check --model and --dataset before reading "
            "this as tampering"
        )
    return (
        f"{total - len(same)} of {total} entries do not fit the template ({where}){detail}: "
        "tampering, or a template that differs from the model that wrote the file"
    )


def _print(verdict, hint: str = "") -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console(soft_wrap=True)  # whole lines: a message is never cut
    summary = verdict.summary()
    if verdict.detector == "load":  # the file itself: its one message
        con.print(f"[bold red]CANNOT VERIFY[/] {escape(verdict.findings[0].message)}")
        return
    if not verdict.verified:
        con.print(f"[bold red]CANNOT VERIFY[/] {escape(summary)}")
    elif verdict.malicious:
        con.print(f"[bold red]FLAGGED[/] {escape(summary)}")
    else:
        exposure = verdict.metadata.get("exposure", {}).get("sentence", "")
        line = f"({verdict.detector}, {verdict.elapsed_s:.2f} s)" + (
            f"; {exposure}" if exposure else ""
        )
        con.print(f"[bold green]BENIGN[/] {escape(line)}")
    flagged = [f for f in verdict.findings if f.flagged]
    if len(flagged) > 1 or (flagged and flagged[0].message not in summary):
        for f in flagged:
            con.print(escape(f"  - {f.check} [{f.layer}]: {f.message}"), highlight=False)
    if hint:
        con.print(escape(f"  note: {hint}"), style="yellow", highlight=False)
