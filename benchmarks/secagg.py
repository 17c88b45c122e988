"""Attacks on secure aggregation, measured: LOKI and model inconsistency in-process, through
Flower's real SecAgg+, and each client's default-Guard verdict (issue 10).

    python benchmarks/secagg.py                       # every section
    python benchmarks/secagg.py --section headline    # one section (others kept from the JSON)
    python benchmarks/secagg.py --quick               # small rows only

Sections: ``in_process`` (small rows), ``headline`` (LOKI, Fashion-MNIST 10 clients x 64,
8 local steps, at seeds 0-2, the issue's row), ``headline_flower`` (that round through
Flower SecAgg+, with the wall time and the machine's peak memory), ``flower`` (small rows at
Flower's defaults and at the attacker's settings), ``verdicts``.
Writes ``benchmarks/results/secagg.json`` and ``secagg.md``. In-process rows are
:func:`gradguard.bench.attack_round.run_attack` (gradguard's pairwise-masked secure sum);
Flower rows are :func:`gradguard.integrations.flower.secagg.attack_through_secagg` (the
clients run ``secaggplus_mod``, the server ``SecAggPlusWorkflow``), at Flower's defaults and
at the attacker's choice (quantisation range 2^30, the most Flower's int32 rounding allows;
clipping range 1.25 x the largest parameter sent among those the attack decodes, or among
all for ``clip_to="all"``; max_weight = the batch size).
Verdicts: each client runs ``Guard(template=honest model, data=its batch)`` on the model it
receives. Timings are wall-clock on a shared CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradguard.attacks import get_attack  # noqa: E402
from gradguard.attacks.server.imprint import Imprint  # noqa: E402
from gradguard.bench.attack_round import run_attack  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.detect.guard import Guard  # noqa: E402
from gradguard.models import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ATTACKER = {
    "clipping_range": 0,
    "quantization_range": 2**30,
    "modulus_range": 2**40,
}
#: LOKI at scale 1 (no FedAvg drift compensation)
LOKI_SCALE_1 = {"tap_scale": 1.0, "imprint_scale": 1.0, "head_scale": 1.0}
#: the issue's LOKI round
HEADLINE = ("loki", "fashion-mnist", "convnet", 10, 64, 8)


def in_process(rows: list[tuple], seed: int = 0) -> list[dict[str, Any]]:
    out = []
    for attack, dataset, model, clients, batch, steps, options in rows:
        r = run_attack(
            attack,
            dataset,
            model,
            batch_size=batch,
            local_steps=steps,
            clients=clients,
            seed=seed,
            **options,
        )
        s = r.summary()
        s["options"], s["seed"] = options, seed
        out.append(s)
        print(json.dumps(s), flush=True)
    return out


def flower(rows: list[tuple]) -> list[dict[str, Any]]:
    from gradguard.integrations.flower.secagg import SecAggSettings, attack_through_secagg

    out = []
    for attack, model, clients, batch, steps, options, label, clip_to in rows:
        for which in ("flower defaults", "attacker's choice"):
            settings = (
                SecAggSettings()
                if which == "flower defaults"
                else SecAggSettings(**ATTACKER, max_weight=float(batch), clip_to=clip_to)
            )
            r = attack_through_secagg(
                attack,
                settings,
                model=model,
                clients=clients,
                batch_size=batch,
                local_steps=steps,
                **options,
            )
            r.pop("aggregate")
            r.pop("sent")
            inproc = run_attack(
                attack,
                "digits",
                model,
                batch_size=batch,
                local_steps=steps,
                clients=clients,
                **options,
            ).summary()
            r.update(
                secagg=which, label=label, in_process_leaked_fraction=inproc["leaked_fraction"]
            )
            out.append(r)
            print(json.dumps(r), flush=True)
    return out


def headline_flower() -> list[dict[str, Any]]:
    """The issue's LOKI round through Flower SecAgg+ at the attacker's settings; wall time and
    the machine's peak used memory (sampled; other processes included)."""
    import threading
    import time

    import psutil

    from gradguard.integrations.flower.secagg import SecAggSettings, attack_through_secagg

    attack, dataset, model, clients, batch, steps = HEADLINE
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], psutil.virtual_memory().used)

    baseline = psutil.virtual_memory().used
    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    r = attack_through_secagg(
        attack,
        SecAggSettings(**ATTACKER, max_weight=float(batch)),
        dataset=dataset,
        model=model,
        clients=clients,
        batch_size=batch,
        local_steps=steps,
    )
    done.set()
    parameters = sum(v.numel() for v in r["sent"][0].values())
    r.pop("aggregate")
    r.pop("sent")
    r.update(
        label="loki (defaults)",
        secagg="attacker's choice",
        dataset=dataset,
        parameters_per_client=parameters,
        wall_seconds=round(time.perf_counter() - start, 1),
        used_memory_gb_before=round(baseline / 2**30, 1),
        used_memory_gb_peak=round(peak[0] / 2**30, 1),
    )
    print(json.dumps(r), flush=True)
    return [r]


def verdicts(clients: int = 4, batch: int = 16) -> list[dict[str, Any]]:
    """Each client's default-Guard verdict on the model it receives."""
    train, aux = train_test("digits")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = [train.subset(order[c * batch : (c + 1) * batch]) for c in range(clients)]
    cases = [
        ("loki", "convnet", get_attack("loki", clients=clients, batch_size=batch)),
        (
            "loki (scale 1)",
            "convnet",
            get_attack("loki", clients=clients, batch_size=batch, **LOKI_SCALE_1),
        ),
        ("inconsistency, inner imprint", "mlp", get_attack("inconsistency", batch_size=batch)),
        (
            "inconsistency, inner curious",
            "mlp",
            get_attack("inconsistency", inner="curious", batch_size=batch),
        ),
    ]
    cases.append(
        (
            "inconsistency, inner imprint, imprint_scale 1e-4",
            "mlp",
            get_attack("inconsistency", batch_size=batch, imprint_scale=1e-4),
        )
    )
    adaptive = get_attack("inconsistency", batch_size=batch)
    adaptive.inner = get_attack("imprint", **Imprint.adaptive)  # the disguised inner imprint
    cases.append(("inconsistency, inner imprint adaptive", "mlp", adaptive))
    honest_inner = get_attack("inconsistency", batch_size=batch)
    cases.append(("inconsistency, target gets the honest model", "mlp", honest_inner))
    out = []
    for label, model_name, attack in cases:
        torch.manual_seed(0)
        honest = build_model(
            model_name, train.image_shape, train.num_classes, **attack.model_kwargs(model_name)
        )
        models, _ = attack.manipulate_clients(copy.deepcopy(honest), aux, list(range(clients)))
        if label.endswith("honest model"):
            models[0] = honest
        for c in range(clients):
            guard = Guard(template=honest, data=batches[c])
            v = guard.check(models[c].state_dict())
            role = (
                ("target" if c == 0 else "non-target") if "inconsistency" in label else "own block"
            )
            row = {
                "attack": label,
                "client": c,
                "role": role,
                "flagged": v.malicious,
                "allowed": guard.allows(v),
                "detector": v.detector,
                "summary": v.summary()[:160],
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Attacks on secure aggregation (benchmarks/secagg.py)", ""]
    lines += [
        "## LOKI, Fashion-MNIST, 10 clients x 64, 8 local steps (defaults)",
        "",
        "| engine | seed | leaked | images | PSNR mean | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.get("headline", []):
        lines.append(
            f"| in-process secure sum | {r['seed']} | {r['leaked_fraction']:.1%} | "
            f"{sum(r['leaked'].values())} of {r['clients'] * r['batch_size']} | "
            f"{r['psnr_mean']} | {r['seconds']} |"
        )
    for r in report.get("headline_flower", []):
        lines.append(
            f"| Flower SecAgg+ (clip {r['settings']['clipping_range']:.3g}, Q 2^30; "
            f"{r['parameters_per_client'] / 1e6:.0f}M parameters per client; peak used "
            f"memory {r['used_memory_gb_peak']} GB from {r['used_memory_gb_before']} GB) | 0 | "
            f"{r['leaked_fraction']:.1%} | {sum(r['leaked'].values())} of "
            f"{r['clients'] * r['batch_size']} | {r['psnr_mean']} | {r['wall_seconds']} |"
        )
    lines += [
        "",
        "## In-process (gradguard's pairwise-masked secure sum)",
        "",
        "| attack | dataset | clients x batch | local steps | leaked | PSNR mean | cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.get("in_process", []):
        lines.append(
            f"| {r['attack']} {r.get('options') or ''} | {r['dataset']} | "
            f"{r['clients']} x {r['batch_size']} | {r['local_steps']} | "
            f"{r['leaked_fraction']:.1%} | {r['psnr_mean']} | "
            f"{r.get('aggregate_cosine_to_target')} |"
        )
    lines += [
        "",
        "## Flower SecAgg+ (secaggplus_mod + SecAggPlusWorkflow), digits",
        "",
        "| attack | clients x batch | steps | SecAgg+ | clip | quant | leaked (Flower) | "
        "leaked (in-process) | cosine, all parameters | cosine, decoded layer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.get("flower", []):
        s = r["settings"]
        clip_to = f" (sized to {s['clip_to']})" if r["secagg"] != "flower defaults" else ""
        lines.append(
            f"| {r['label']} | {r['clients']} x {r['batch_size']} | {r['local_steps']} |"
            f" {r['secagg']} | {s['clipping_range']:.3g}{clip_to} | "
            f"{s['quantization_range']} | {r['leaked_fraction']:.1%} | "
            f"{r['in_process_leaked_fraction']:.1%} | {r.get('aggregate_cosine_to_target')} | "
            f"{r.get('aggregate_cosine_decoded')} |"
        )
    lines += [
        "",
        "## Default Guard, per client (digits, 4 clients x 16)",
        "",
        "| attack | client | role | flagged | trains | detector |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.get("verdicts", []):
        lines.append(
            f"| {r['attack']} | {r['client']} | {r['role']} | {r['flagged']} | "
            f"{r['allowed']} | {r['detector']} |"
        )
    return "\n".join(lines) + "\n"


SECTIONS = ("in_process", "headline", "headline_flower", "flower", "verdicts")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--section", action="append", choices=SECTIONS, help="default: all")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    name = "secagg_quick" if args.quick else "secagg"
    path = RESULTS / f"{name}.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if args.markdown_only:
        (RESULTS / f"{name}.md").write_text(markdown(report))
        return
    sections = args.section or list(SECTIONS)
    if args.quick:
        sections = [s for s in sections if not s.startswith("headline")]
    rows = [
        ("loki", "digits", "convnet", 4, 16, 1, {}),
        ("loki", "digits", "convnet", 4, 16, 8, {}),
        ("inconsistency", "digits", "mlp", 4, 16, 1, {}),
        ("inconsistency", "digits", "mlp", 4, 16, 1, {"imprint_scale": 0.01}),
        ("inconsistency", "digits", "mlp", 4, 16, 1, {"imprint_scale": 1e-4}),
    ]
    if not args.quick:
        rows += [
            ("loki", "digits", "convnet", 4, 16, 4, {}),
            ("loki", "digits", "convnet", 10, 16, 8, {}),
            ("loki", "fashion-mnist", "convnet", 4, 16, 8, {}),
            ("inconsistency", "fashion-mnist", "mlp", 4, 64, 4, {}),
        ]
    fl_rows = [
        ("loki", "convnet", 2, 16, 1, {}, "loki", "decoded"),
        ("loki", "convnet", 2, 16, 4, {}, "loki", "decoded"),
        ("inconsistency", "mlp", 2, 16, 1, {}, "inconsistency", "all"),
        (
            "inconsistency",
            "mlp",
            2,
            16,
            1,
            {"imprint_scale": 0.01},
            "inconsistency, imprint_scale 0.01",
            "all",
        ),
    ]
    if not args.quick:
        fl_rows += [
            ("loki", "convnet", 2, 16, 1, LOKI_SCALE_1, "loki scale 1", "decoded"),
            (
                "inconsistency",
                "mlp",
                2,
                16,
                1,
                {"imprint_scale": 1e-4},
                "inconsistency, imprint_scale 1e-4",
                "all",
            ),
        ]
    attack, dataset, model, clients, batch, steps = HEADLINE
    for section in sections:
        if section == "in_process":
            result = in_process(rows)
        elif section == "headline":
            result = [
                r
                for seed in (0, 1, 2)
                for r in in_process([(attack, dataset, model, clients, batch, steps, {})], seed)
            ]
        elif section == "headline_flower":
            result = headline_flower()
        elif section == "flower":
            result = flower(fl_rows)
        else:
            result = verdicts()
        # re-read: another run may have written its own sections meanwhile
        report = json.loads(path.read_text()) if path.exists() else {}
        report[section] = result
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        (RESULTS / f"{name}.md").write_text(markdown(report))
        print(f"wrote {path} and .md", flush=True)


if __name__ == "__main__":
    main()
