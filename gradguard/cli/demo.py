"""``gradguard demo``: a federation whose server turns malicious, unguarded vs guarded.

Three runs of the same federation: attack-free, attacked with unguarded clients, attacked
with guarded clients (every client runs the Guard and abstains on a flagged model). Prints a
per-round table, writes an HTML report (``--out``), or prints JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gradguard.bench.engines import ENGINES

    p.add_argument(
        "--engine",
        choices=tuple(ENGINES),
        default="inprocess",
        help="inprocess (default), flower (Flower's simulation engine), flower-deployment, "
        "nvflare (NVFlare's simulator)",
    )
    p.add_argument("--dataset", default="digits", help="digits (embedded), fashion-mnist, ...")
    p.add_argument(
        "--model", default=None, help="model of the federation (default mlp; loki: convnet)"
    )
    p.add_argument("--attack", default="imprint", help="server attack (default imprint)")
    p.add_argument("--rounds", type=int, default=10, help="FL rounds (default 10)")
    p.add_argument("--clients", type=int, default=4, help="clients (default 4)")
    p.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="the server sees only each round's sum (on by default for attacks on secure "
        "aggregation: loki, inconsistency; with --engine flower they run Flower's SecAgg+)",
    )
    p.add_argument(
        "--refusal",
        choices=REFUSALS,
        default="drop",
        help="what a guarded client does with a secure round it refuses: drop out (default) "
        "or mask a noise cover so the sum is never another client's update alone",
    )
    p.add_argument(
        "--attack-rounds",
        default=None,
        help="rounds in which the server is malicious (default 3,5; with fewer --rounds, the "
        "last round)",
    )
    p.add_argument("--targets", default="all", help="attacked client ids, or all (default)")
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use at most this many training images (e.g. for fashion-mnist)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default="gradguard-report", help="report folder (default ./gradguard-report)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--open", action="store_true", help="open the report in a browser")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead")


REFUSALS = ("drop", "cover")
# Attacks on secure aggregation read one round's batch per client: the demo gives each
# client a batch-sized partition (train-limit = the server's 128 auxiliary images +
# clients x batch) trained in one step per round, under secure aggregation.
SECURE_BATCH = 16
SECURE_MODELS = {"loki": "convnet"}
# LOKI sized for SecAgg+'s quantisation (docs/secagg.md): identity taps and head at 1, the
# imprint rows 10x down; used on both engines so that they run the same attack
SECURE_OPTIONS = {
    "loki": (("tap_scale", 1.0), ("imprint_scale", 0.1), ("head_scale", 1.0)),
    "inconsistency": (("imprint_scale", 1e-4),),
}


def scenario_from(args: argparse.Namespace):
    from gradguard.attacks import attack_class
    from gradguard.bench.scenario import Scenario
    from gradguard.cli import check_output_dir, usage_error

    try:
        spec = args.attack_rounds
        if spec is None:  # the default 3,5 clamped to the rounds there are
            spec = ",".join(dict.fromkeys(str(max(1, min(r, args.rounds))) for r in (3, 5)))
        attack_rounds = tuple(int(x) for x in spec.split(",") if x.strip())
        targets = (
            None
            if args.targets.strip() in ("all", "")
            else tuple(int(x) for x in args.targets.split(","))
        )
    except ValueError:
        raise usage_error("--attack-rounds and --targets take comma-separated integers") from None
    if args.rounds < 1 or args.clients < 1:
        raise usage_error("--rounds and --clients must be at least 1")
    if args.rounds > 10_000 or args.clients > 10_000:
        raise usage_error("--rounds and --clients must be at most 10000")
    if not attack_rounds:
        raise usage_error("--attack-rounds names no round: the demo would attack nothing")
    if any(r < 1 or r > args.rounds for r in attack_rounds):
        raise usage_error(f"--attack-rounds must lie in 1..{args.rounds}")
    if targets is not None:
        if not targets:
            raise usage_error("--targets names no client: the demo would attack nothing")
        bad = [t for t in targets if not 0 <= t < args.clients]
        if bad:
            raise usage_error(
                f"--targets {','.join(map(str, bad))}: client ids are 0..{args.clients - 1}"
            )
    from gradguard.attacks import ATTACKS
    from gradguard.models import MODELS

    if args.attack not in ATTACKS:
        raise usage_error(f"unknown attack {args.attack!r}; valid: {', '.join(ATTACKS)}")
    secure_attack = attack_class(args.attack).secure_sum
    if args.model is None:
        args.model = SECURE_MODELS.get(args.attack, "mlp")
    if args.model not in MODELS:
        raise usage_error(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.train_limit is not None and args.train_limit < 1:
        raise usage_error(f"--train-limit must be >= 1 (got {args.train_limit})")
    if not args.no_report:
        check_output_dir("--out", args.out)
    secure: dict = {}
    if secure_attack or args.secure_aggregation or args.engine == "flower-secagg":
        secure["secure_aggregation"] = True
        secure["refusal"] = args.refusal
    if secure_attack:
        secure.update(batch_size=SECURE_BATCH, epochs=1)
        secure["attack_options"] = SECURE_OPTIONS.get(args.attack, ())
        if args.train_limit is None:
            args.train_limit = Scenario.aux_size + args.clients * SECURE_BATCH
    return Scenario(
        **secure,
        dataset=args.dataset,
        model=args.model,
        attack=args.attack,
        rounds=args.rounds,
        clients=args.clients,
        attack_rounds=attack_rounds,
        targets=targets,
        train_limit=args.train_limit,
        seed=args.seed,
        guard_stop_at_first=bool(args.no_report),  # the report shows every detector
    )


def engine_for(sc, engine: str) -> str:
    """Under secure aggregation ``flower`` means Flower's SecAgg+ (``flower-secagg``)."""
    return "flower-secagg" if engine == "flower" and sc.secure_aggregation else engine


def run_all(sc, engine: str, progress: bool = True) -> dict[str, Any]:
    """The three runs on ``engine``; returns ``{"attack-free", "unguarded", "guarded"}``."""
    from gradguard.bench.engines import ENGINES, engine_session, get_engine
    from gradguard.bench.setup import build, make_attack

    engine = engine_for(sc, engine)
    if sc.secure_aggregation and engine in ENGINES and not ENGINES[engine].secure_aggregation:
        from gradguard.errors import GradguardError

        raise GradguardError(
            f"engine {engine!r} has no secure aggregation here; use inprocess or flower"
        )
    make_attack(sc)  # fail early on an unknown attack name
    build(sc)  # ... and on unknown data or model
    run = get_engine(engine)  # ... and on an engine that cannot be loaded
    plan = (("attack-free", False, False), ("unguarded", False, True), ("guarded", True, True))
    runs = {}
    with engine_session(engine):
        for name, guarded, attacked in plan:
            _status(progress, f"running the {name} federation ({engine})")
            runs[name] = run(sc, guarded=guarded, attacked=attacked, progress=progress)
    return runs


def _status(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def summarize(sc, runs: dict[str, Any], seconds: float, engine: str) -> dict[str, Any]:
    free, ung, gua = runs["attack-free"], runs["unguarded"], runs["guarded"]
    rounds = []
    for f, u, g in zip(free.rounds, ung.rounds, gua.rounds, strict=True):
        rounds.append(
            {
                "round": u.round,
                "attack": sc.attack if u.attacked else None,
                "targeted": u.targeted,
                "abstained": len(g.abstained),
                "leaked_unguarded": u.leaked,
                "leaked_guarded": g.leaked,
                "accuracy_attack_free": round(f.accuracy, 4),
                "accuracy_unguarded": round(u.accuracy, 4),
                "accuracy_guarded": round(g.accuracy, 4),
            }
        )
    false_alarms = gua.false_alarms
    return {
        "engine": engine,
        "dataset": sc.dataset,
        "model": sc.model,
        "attack": sc.attack,
        "clients": sc.clients,
        "attack_rounds": list(sc.attack_rounds),
        "rounds": rounds,
        "leaked_unguarded": ung.leaked,
        "leaked_guarded": gua.leaked,
        "abstentions": gua.abstentions,
        "false_alarms": false_alarms,
        "leaked_by_client": {
            "unguarded": leaked_by_client(ung),
            "guarded": leaked_by_client(gua),
        },
        "abstained_by_client": abstained_by_client(gua),
        "secure_aggregation": sc.secure_aggregation,
        "refusal": sc.refusal if sc.secure_aggregation else None,
        "final_accuracy": {
            "attack_free": round(free.final_accuracy, 4),
            "unguarded": round(ung.final_accuracy, 4),
            "guarded": round(gua.final_accuracy, 4),
        },
        "seconds": round(seconds, 2),
        "run_seconds": {k: round(v.seconds, 2) for k, v in runs.items()},
    }


def leaked_by_client(run) -> dict[str, int]:
    """Images leaked from each client over the run (clients something was recovered from)."""
    out: dict[str, int] = {}
    for r in run.rounds:
        for leak in r.leaks:
            out[str(leak.client_id)] = out.get(str(leak.client_id), 0) + leak.leaked
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def abstained_by_client(run) -> dict[str, list[int]]:
    """The rounds each client refused (dropped out of, or covered under secure aggregation)."""
    out: dict[str, list[int]] = {}
    for r in run.rounds:
        for c in r.abstained:
            out.setdefault(str(c), []).append(r.round)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"gradguard demo: {summary['attack']} on {summary['model']} / "
        f"{summary['dataset']}, {summary['clients']} clients "
        f"({summary['engine']})"
    )
    for col in (
        "round",
        "attack",
        "clients\nabstained",
        "leaked\nunguarded",
        "leaked\nguarded",
        "accuracy\nattack-free",
        "accuracy\nunguarded",
        "accuracy\nguarded",
    ):
        t.add_column(col, justify="right", no_wrap=True)
    for r in summary["rounds"]:
        t.add_row(
            str(r["round"]),
            r["attack"] or "-",
            str(r["abstained"]),
            f"[red]{r['leaked_unguarded']}[/]" if r["leaked_unguarded"] else "0",
            str(r["leaked_guarded"]),
            f"{r['accuracy_attack_free']:.3f}",
            f"{r['accuracy_unguarded']:.3f}",
            f"{r['accuracy_guarded']:.3f}",
        )
    console = Console(width=None if sys.stdout.isatty() else 110)
    console.print(t)
    acc = summary["final_accuracy"]
    console.print(
        f"images leaked: unguarded [bold red]{summary['leaked_unguarded']}[/], "
        f"guarded [bold green]{summary['leaked_guarded']}[/]; "
        f"abstentions {summary['abstentions']}, false alarms "
        f"{summary['false_alarms']}; final accuracy attack-free {acc['attack_free']:.3f}"
        f", unguarded {acc['unguarded']:.3f}, guarded {acc['guarded']:.3f}; "
        f"{summary['seconds']:.1f} s"
    )
    if summary.get("secure_aggregation"):
        who = summary["leaked_by_client"]

        def per_client(d: dict[str, int]) -> str:
            return ", ".join(f"client {c}: {n}" for c, n in d.items()) or "none"

        refused = ", ".join(
            f"client {c} (rounds {','.join(map(str, rs))})"
            for c, rs in summary["abstained_by_client"].items()
        )
        console.print(
            f"secure aggregation ({summary['engine']}), refused rounds "
            f"{'dropped out' if summary['refusal'] == 'drop' else 'covered'}; leaked from "
            f"each client: unguarded {per_client(who['unguarded'])}; guarded "
            f"{per_client(who['guarded'])}; refusals: {refused or 'none'}"
        )


def run(args: argparse.Namespace) -> int:
    import torch

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    torch.set_num_threads(1)
    # The guard's per-verdict warnings would drown the table; the report lists them.
    logging.getLogger("gradguard").addHandler(logging.NullHandler())
    logging.getLogger("gradguard").propagate = False
    sc = scenario_from(args)
    start = time.perf_counter()
    runs = run_all(sc, args.engine, progress=not args.json)
    summary = summarize(sc, runs, time.perf_counter() - start, engine_for(sc, args.engine))
    if not args.no_report:
        from gradguard.report import write_report

        index = write_report(
            args.out,
            sc,
            runs,
            {
                "engine": summary["engine"],
                "images leaked unguarded": summary["leaked_unguarded"],
                "images leaked guarded": summary["leaked_guarded"],
                "abstentions": summary["abstentions"],
                **(
                    {"secure aggregation": f"yes; refused rounds: {summary['refusal']}"}
                    if summary["secure_aggregation"]
                    else {}
                ),
                "final accuracy (attack-free / unguarded / guarded)": " / ".join(
                    f"{v:.3f}" for v in summary["final_accuracy"].values()
                ),
                "seconds": summary["seconds"],
            },
        )
        summary["report"] = str(index)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
        if "report" in summary:
            print(f"report: {summary['report']}")
            if args.open:
                import webbrowser

                webbrowser.open(f"file://{os.path.abspath(summary['report'])}")
    return 0
