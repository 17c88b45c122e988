"""Choosing LOKI's scales without the clients' data: the server simulates the round on its
own auxiliary data (the test split) and keeps the setting that leaks most (issue 10).

    python benchmarks/loki_tuning.py --dataset fashion-mnist --clients 10 --batch-size 64 \\
        --local-steps 8 --set tap_scale=0.02,imprint_scale=3e-5,head_scale=0.002 [--secagg]

Each client's batch is drawn from the auxiliary split (disjoint batches, seed ``--seed``),
never from the training split the evaluation (``gradguard attack loki``) draws from. The
round is gradguard's own FedAvg (``local_update``) with the plain example-weighted mean as
the aggregate; ``--secagg`` passes each client's trained parameters through Flower's own
SecAgg+ clipping and quantisation (``flwr.common.secure_aggregation.quantization``) at the
attacker's settings (quantisation 2^30, clipping 1.25 x the largest decoded parameter,
max_weight = the batch size) before averaging; the masks cancel exactly and are left out.
Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradguard.attacks import get_attack  # noqa: E402
from gradguard.bench.campaign import Campaign, sum_updates  # noqa: E402
from gradguard.bench.scoring import leaked_fraction  # noqa: E402
from gradguard.data import train_test  # noqa: E402
from gradguard.fl import LocalTraining, local_update  # noqa: E402
from gradguard.fl.update import Update  # noqa: E402
from gradguard.models import build_model  # noqa: E402

ATTACKER_Q = 2**30


def through_secagg_quantisation(
    sent: dict[str, torch.Tensor], update: Update, keys: tuple[str, ...], q: int = ATTACKER_Q
) -> Update:
    """``update`` as it survives SecAgg+: trained parameters (float32) clipped to 1.25 x the
    largest sent |value| among ``keys``, quantised by Flower's own code, dequantised."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    clip = 1.25 * max(float(sent[k].abs().max()) for k in keys)
    delta = update.as_delta()
    out = {}
    for k, d in delta.items():
        trained = (sent[k] + d).numpy().astype(np.float32)
        back = dequantize(quantize([trained], clip, q), clip, q)[0]
        out[k] = (torch.from_numpy(back).double() - sent[k].double()).float()
    return Update(out, update.num_examples, update.local_steps, update.lr, "delta")


def simulate(args: argparse.Namespace, options: dict[str, float]) -> dict:
    attack = get_attack(
        "loki", clients=args.clients, batch_size=args.batch_size, **args.fixed, **options
    )
    _, aux = train_test(args.dataset)
    torch.manual_seed(args.seed)
    template = build_model(
        "convnet", aux.image_shape, aux.num_classes, None, **attack.model_kwargs("convnet")
    )
    order = torch.randperm(len(aux), generator=torch.Generator().manual_seed(args.seed))
    b = args.batch_size
    batches = {c: aux.subset(order[c * b : (c + 1) * b]) for c in range(args.clients)}
    campaign = Campaign(attack, (1,), None, aux, {c: x.x for c, x in batches.items()})
    models = campaign.models_for(1, template, list(batches))
    e = args.local_steps
    training = (
        LocalTraining(batch_size=b, lr=args.lr, fedsgd=True)
        if e == 1
        else LocalTraining(batch_size=math.ceil(b / e), lr=args.lr, steps=e)
    )
    start = time.perf_counter()
    updates = []
    for c, batch in batches.items():
        u = local_update(models[c], batch, training, torch.Generator().manual_seed(c), c)
        if args.secagg:
            sent = {k: v.detach() for k, v in models[c].state_dict().items()}
            u = through_secagg_quantisation(sent, u, attack.decoded_keys(None))
        updates.append(u)
    leaks = campaign.recover(1, aggregate=sum_updates(updates))
    psnr = np.concatenate([k.match.psnr for k in leaks if k.match is not None])
    return {
        "options": options,
        "secagg": bool(args.secagg),
        "leaked_fraction": round(leaked_fraction(leaks), 4),
        "psnr_median": round(float(np.median(psnr)), 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def alone_in_bin(args: argparse.Namespace, split: str) -> dict:
    """Per bins_per_sample: the fraction of the round's samples alone in their brightness bin
    (at the sent model: an upper bound on what LOKI can recover, FedAvg drift aside)."""
    from gradguard.attacks.server.imprint import bin_thresholds, measurement_vector

    train, aux = train_test(args.dataset)
    data = train if split == "train" else aux
    a = measurement_vector("brightness", aux.image_shape)
    m_aux = aux.x[:10_000].flatten(1).double() @ a
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    out = {}
    for per_sample in (4, 6, 8):
        q = bin_thresholds(m_aux, per_sample * args.batch_size, "empirical")
        alone = 0
        for c in range(args.clients):
            idx = order[c * args.batch_size : (c + 1) * args.batch_size]
            k = torch.searchsorted(q, data.x[idx].flatten(1).double() @ a)
            alone += int((torch.bincount(k)[k] == 1).sum())
        out[per_sample] = round(alone / (args.clients * args.batch_size), 4)
    return {"split": split, "seed": args.seed, "alone_in_bin": out}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--local-steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--secagg", action="store_true")
    p.add_argument("--fixed", default="", help="options for every setting, k=v,...")
    p.add_argument("--set", action="append", default=[], help="one setting, k=v,...")
    p.add_argument(
        "--alone-in-bin",
        choices=("aux", "train"),
        help="only count samples alone in their bin (train: the clients' split, a diagnosis)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.alone_in_bin:
        print(json.dumps(alone_in_bin(args, args.alone_in_bin)))
        return
    args.fixed = _pairs(args.fixed)
    for s in args.set or [""]:
        print(json.dumps(simulate(args, _pairs(s))), flush=True)


def _pairs(text: str) -> dict[str, int | float]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {k: int(v) if v.isdigit() else float(v) for k, v in pairs}


if __name__ == "__main__":
    main()
