"""Score SEER on held-out client batches (digits test split): the decoded image against the
batch's true property image.

- ``psnr_mean``: mean PSNR of the decoded image vs the true property image;
- ``identified_fraction``: how often the decoded image is closer (MSE) to the property image
  than to every other image of the batch;
- ``baseline_psnr``: the same PSNR for the constant guess, the mean property image of the
  server's auxiliary batches (digits train split).

The client answers as :func:`gradguard.fl.local_update` does: ``mode="train"`` (batch
statistics; FedSGD gradient or FedAvg delta after ``local_steps``) or ``mode="eval"``
(running statistics, FedSGD gradient only).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F

from gradguard.attacks.server.seer import SeerConfig, SeerParts, load_seer, property_index
from gradguard.data import Dataset, train_test
from gradguard.errors import GradguardError
from gradguard.fl import LocalTraining, local_update
from gradguard.fl.update import Update
from gradguard.metrics import psnr


def mean_property_image(aux: Dataset, batch_size: int, prop: str, n: int = 500) -> torch.Tensor:
    """The constant guess: the average property image over ``n`` seeded auxiliary batches."""
    g = torch.Generator().manual_seed(12345)
    picks = []
    for _ in range(n):
        x = aux.x[torch.randperm(len(aux), generator=g)[:batch_size]]
        picks.append(x[property_index(x, prop)])
    return torch.stack(picks).mean(0)


def client_update(
    model: torch.nn.Module,
    batch: Dataset,
    mode: str = "train",
    local_steps: int = 1,
    lr: float = 0.05,
    seed: int = 0,
) -> Update:
    """What the client sends back for ``batch`` on the received ``model``."""
    b = len(batch)
    if mode == "eval":
        if local_steps != 1:
            raise GradguardError("inference-mode clients are scored on FedSGD only")
        net = copy.deepcopy(model).eval()
        loss = F.cross_entropy(net(batch.x), batch.y)
        names = [n for n, _ in net.named_parameters()]
        grads = torch.autograd.grad(loss, list(net.parameters()))
        return Update(dict(zip(names, grads, strict=True)), b, 1, lr, "gradient")
    if mode != "train":
        raise GradguardError(f"client mode must be train or eval (got {mode!r})")
    if local_steps == 1:
        training = LocalTraining(batch_size=b, lr=lr, fedsgd=True)
    else:
        training = LocalTraining(batch_size=math.ceil(b / local_steps), lr=lr, steps=local_steps)
    return local_update(model, batch, training, torch.Generator().manual_seed(seed))


def evaluate_parts(
    parts: SeerParts,
    held_out: Dataset,
    aux: Dataset,
    n_batches: int = 200,
    seed: int = 0,
    mode: str = "train",
    local_steps: int = 1,
    lr: float = 0.05,
    keep: int = 0,
) -> dict[str, Any]:
    """Score ``parts`` on ``n_batches`` seeded held-out batches; ``keep`` first examples are
    returned (property image, decoded image) for figures."""
    cfg = parts.cfg
    guess = mean_property_image(aux, cfg.batch_size, cfg.prop)
    g = torch.Generator().manual_seed(seed)
    scores, base, hits, examples = [], [], 0, []
    for i in range(n_batches):
        idx = torch.randperm(len(held_out), generator=g)[: cfg.batch_size]
        batch = held_out.subset(idx)
        update = client_update(parts.model, batch, mode, local_steps, lr, seed + i)
        with torch.no_grad():
            recon = parts.decode(update.as_gradient())[0]
        target_i = int(property_index(batch.x, cfg.prop))
        target = batch.x[target_i]
        scores.append(float(psnr(recon[None], target[None])[0]))
        base.append(float(psnr(guess[None], target[None])[0]))
        dist = (batch.x - recon[None]).pow(2).flatten(1).mean(1)
        hits += int(int(dist.argmin()) == target_i)
        if len(examples) < keep:
            examples.append((target, recon))
    t = torch.tensor(scores)
    out = {
        "norm": cfg.norm,
        "batch_size": cfg.batch_size,
        "property": cfg.prop,
        "mode": mode,
        "local_steps": local_steps,
        "n_batches": n_batches,
        "psnr_mean": round(float(t.mean()), 2),
        "psnr_std": round(float(t.std()), 2),
        "identified_fraction": round(hits / n_batches, 4),
        "baseline_psnr": round(sum(base) / len(base), 2),
    }
    if keep:
        out["examples"] = examples
    return out


def evaluate(
    norm: str = "batch",
    batch_size: int = 16,
    prop: str = "brightest",
    n_batches: int = 200,
    seed: int = 0,
    mode: str = "train",
    local_steps: int = 1,
    lr: float = 0.05,
) -> dict[str, Any]:
    """Load the committed SEER weights for (norm, batch size) and score them."""
    parts = load_seer(SeerConfig(norm=norm, batch_size=batch_size, prop=prop))
    aux, held_out = train_test("digits")
    return evaluate_parts(parts, held_out, aux, n_batches, seed, mode, local_steps, lr)


def run_cli(args: Any) -> int:
    """``gradguard attack seer``: ``--norm``, ``--batch-size``, ``--local-steps``, ``--lr``,
    ``--seed``; ``--option mode=eval``, ``--option n_batches=N``, ``--option prop=darkest``."""
    import json

    from gradguard.cli import usage_error

    if args.dataset != "digits" or args.model not in ("mlp", "resnet"):
        raise usage_error("seer has trained weights for --dataset digits --model resnet only")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if key.strip() not in ("mode", "n_batches", "prop") or not sep:
            raise usage_error(f"seer options are mode=, n_batches=, prop= (got {item!r})")
        options[key.strip()] = value.strip()
    try:
        n_batches = int(options.get("n_batches", 200))
    except ValueError:
        raise usage_error("n_batches must be an integer") from None
    if not 1 <= n_batches <= 100_000 or args.local_steps < 1 or not args.lr > 0:
        raise usage_error("need 1 <= n_batches <= 100000, --local-steps >= 1, --lr > 0")
    torch.set_num_threads(1)  # tiny tensors: more threads only contend
    result = evaluate(
        norm=args.norm or "batch",
        batch_size=args.batch_size,
        prop=options.get("prop", "brightest"),
        n_batches=n_batches,
        seed=args.seed,
        mode=options.get("mode", "train"),
        local_steps=args.local_steps,
        lr=args.lr,
    )
    if args.json:
        print(json.dumps({"attack": "seer", "dataset": "digits", "model": "resnet", **result}))
    else:
        print(
            f"seer ({result['norm']} norm, batch {result['batch_size']}, {result['mode']} mode, "
            f"{result['local_steps']} local step(s)), {n_batches} held-out batches: "
            f"PSNR {result['psnr_mean']:.2f} dB vs constant guess {result['baseline_psnr']:.2f}"
            f" dB; property image identified in {result['identified_fraction']:.1%}"
        )
    return 0


def probability_table(
    batch_sizes: tuple[int, ...] = (16, 64, 256, 512), trials: int = 5000, seed: int = 0
) -> list[dict[str, Any]]:
    """Seed 000, eqs. 2-5 vs 8-12: the chance that exactly one sample of a batch is selected.

    ``fixed_bin_exact``: a bin of probability mass ``1/B`` (the best fixed bin for independent
    samples), ``(1 - 1/B)^(B - 1)``, which tends to 1/e. ``fixed_bin_simulated``: the same bin
    (brightness above the ``1 - 1/B`` quantile of the auxiliary split) on batches of distinct
    images drawn from all 1797 digits. ``extreme_simulated``: the in-batch brightest is unique
    (eqs. 8-12; only ties break it: digits pixels take 17 values, so ties happen).
    """
    aux, held_out = train_test("digits")
    aux_b = aux.x.flatten(1).mean(1)
    pool = torch.cat([aux_b, held_out.x.flatten(1).mean(1)])
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in batch_sizes:
        threshold = torch.quantile(aux_b, 1 - 1 / b)
        draws = torch.stack(
            [pool[torch.randperm(len(pool), generator=g)[:b]] for _ in range(trials)]
        )
        in_bin = (draws > threshold).sum(1)
        top = draws.max(1, keepdim=True).values
        rows.append(
            {
                "batch_size": b,
                "fixed_bin_exact": round((1 - 1 / b) ** (b - 1), 4),
                "fixed_bin_simulated": round(float((in_bin == 1).float().mean()), 4),
                "extreme_exact": 1.0,
                "extreme_simulated": round(float(((draws == top).sum(1) == 1).float().mean()), 4),
            }
        )
    return rows


def honest_model(norm: str, epochs: int = 5, seed: int = 0) -> torch.nn.Module:
    """The same resnet trained honestly on the digits train split (FedAvg-style SGD)."""
    from gradguard.attacks.server.seer import build_seer_model

    aux, _ = train_test("digits")
    torch.manual_seed(seed)
    net = build_seer_model(norm)
    update = local_update(
        net,
        aux,
        LocalTraining(epochs=epochs, batch_size=32, lr=0.1),
        torch.Generator().manual_seed(seed),
    )
    state = net.state_dict()
    net.load_state_dict(
        {k: v + update.values[k] if k in update.values else v for k, v in state.items()}
    )
    return net


def detection_rows(
    norm: str = "batch", batch_size: int = 16, seed: int = 0
) -> list[dict[str, Any]]:
    """Every registered detector and the default Guard on the SEER model and on honest models
    of the same architecture (initial and trained), each with the client's template (the
    initial model) and local data (64 held-out images)."""
    from gradguard.attacks.server.seer import build_seer_model
    from gradguard.experiments.harness import default_detectors, inspect_all

    _, held_out = train_test("digits")
    local = held_out.subset(
        torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))[:64]
    )
    torch.manual_seed(seed)
    template = build_seer_model(norm)
    models = {
        "honest (initial)": copy.deepcopy(template),
        "honest (trained 5 epochs)": honest_model(norm, seed=seed),
        "seer": load_seer(SeerConfig(norm=norm, batch_size=batch_size)).model,
    }
    rows = []
    for label, net in models.items():
        received = {k: v.detach().clone() for k, v in net.state_dict().items()}
        outcomes = inspect_all(received, template, local, default_detectors())
        rows.append(
            {
                "model": label,
                "norm": norm,
                **{
                    name: {"flagged": o.flagged, "score": o.score, "error": o.error}
                    for name, o in outcomes.items()
                },
            }
        )
    return rows


def erode(parts: SeerParts, rounds: int, clients: int = 4, lr: float = 0.05, seed: int = 0) -> None:
    """``rounds`` honest FedSGD rounds on the SEER model before the attacked one: each round
    averages ``clients`` gradients of batches of ``cfg.batch_size`` auxiliary images (digits
    train split) and steps at ``lr``; batch-norm running statistics move as clients report."""
    aux, _ = train_test("digits")
    g = torch.Generator().manual_seed(10_000 + seed)
    b = parts.cfg.batch_size
    for r in range(rounds):
        updates = [
            client_update(
                parts.model,
                aux.subset(torch.randperm(len(aux), generator=g)[:b]),
                seed=r * clients + c,
            )
            for c in range(clients)
        ]
        state = parts.model.state_dict()
        with torch.no_grad():
            for k in state:
                if state[k].is_floating_point():
                    deltas = [u.as_delta()[k] for u in updates if k in u.as_delta()]
                    if deltas:
                        state[k] += torch.stack(deltas).mean(0)
        parts.model.load_state_dict(state)
