"""The maliciously curious client's grid (seed 001, Yue et al., arXiv 2506.11413).

One cell: a federation of one curious client and ``peers`` honest clients, each holding
``examples`` private images, FedAvg with ``local_steps`` full-batch SGD steps, run by
:class:`gradguard.fl.Federation` under one aggregator and one client-DP noise level, the
curious client uploading honestly or Byzantine-style (:mod:`gradguard.attacks.client.uploads`).
The global model is first trained honestly on a held-out pool (earlier rounds). From the
change of the global model across round 1 it reconstructs peers' images
(:mod:`gradguard.attacks.client.peer_inversion`); they are scored, Hungarian-matched, against
the images of the peers whose updates the server really used in that round (all peers under
the mean, the chosen ones under Krum and Multi-Krum). The baseline is the client's prior
without any attack: the mean image of its own data, scored the same way. The operator's
update checks (:mod:`gradguard.fl.update_checks`) are run on the same round's uploads.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from scipy import stats

from gradguard.attacks.client.curious import CuriousClient, FederationKnowledge
from gradguard.attacks.client.peer_inversion import PeerInversionConfig, invert_peers, peer_view
from gradguard.attacks.inversion.labels import mean_softmax
from gradguard.data import Dataset, train_test
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining, ServerHook
from gradguard.fl.aggregate import _krum_scores  # the evaluator's ground truth of the choice
from gradguard.fl.client import train_sgd
from gradguard.fl.dp import ClientDP
from gradguard.fl.update_checks import check_uploads
from gradguard.metrics import match
from gradguard.models import build_model

AGGREGATORS = ("mean", "krum", "multikrum", "median", "trimmed")
DATASETS = ("digits", "fashion-mnist")
_INVERSIONS: dict[tuple, object] = {}


@dataclass(frozen=True)
class CuriousSettings:
    """One federation's size and training, shared by every cell of a grid."""

    peers: int = 4
    examples: int = 8
    local_steps: int = 3
    lr: float = 0.1
    rounds: int = 3
    byzantine: int = 1
    width: int = 64
    width2: int = 32
    warmup_examples: int = 500
    warmup_epochs: int = 2
    dp_clip: float = 1.0
    iterations: int = 150
    train_limit: int = 3000


@dataclass(frozen=True)
class Cell:
    dataset: str = "digits"
    aggregator: str = "mean"
    dp_noise: float | None = None  # None: no client DP; else the noise multiplier (clip fixed)
    upload: str = "honest"
    seed: int = 0


@dataclass
class Prepared:
    model: torch.nn.Module
    clients: list[Dataset]  # client 0 is the curious one
    test: Dataset


@lru_cache(maxsize=4)
def prepare(dataset: str, seed: int, settings: CuriousSettings) -> Prepared:
    """Data split and the honestly pre-trained global model of one (data set, seed)."""
    train, test = train_test(dataset, limit=settings.train_limit, seed=seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n = settings.peers + 1
    own = [order[i * settings.examples : (i + 1) * settings.examples] for i in range(n)]
    pool = order[n * settings.examples : n * settings.examples + settings.warmup_examples]
    torch.manual_seed(seed)
    model = build_model(
        "mlp", train.image_shape, train.num_classes, width=settings.width, width2=settings.width2
    )
    train_sgd(model, train.subset(pool), settings.warmup_epochs, lr=0.1, batch_size=32)
    return Prepared(
        model, [train.subset(i) for i in own], test.subset(torch.arange(min(1000, len(test))))
    )


class _RoundRecorder(ServerHook):
    """The evaluator's view (not the attacker's): every upload of the attacked round."""

    def __init__(self, rnd: int) -> None:
        self.rnd, self.updates = rnd, None

    def observe(self, rnd, updates, aggregate_delta) -> None:
        if rnd == self.rnd:
            self.updates = updates


def contributors(aggregator: str, vectors: torch.Tensor, byzantine: int) -> list[int]:
    """Indices of the uploads the rule really used (client 0 included if chosen)."""
    n = len(vectors)
    if aggregator == "krum":
        return [int(_krum_scores(vectors, byzantine).argmin())]
    if aggregator == "multikrum":
        m = max(1, n - byzantine)
        return sorted(_krum_scores(vectors, byzantine).topk(m, largest=False).indices.tolist())
    return list(range(n))


def run_cell(cell: Cell, settings: CuriousSettings = CuriousSettings()) -> dict:
    start = time.perf_counter()
    prep = prepare(cell.dataset, cell.seed, settings)
    training = LocalTraining(
        epochs=settings.local_steps, batch_size=settings.examples, lr=settings.lr
    )
    dp = None if cell.dp_noise is None else ClientDP(settings.dp_clip, cell.dp_noise)
    attacker = CuriousClient(0, prep.clients[0], training, upload=cell.upload)
    clients = [attacker] + [Client(i, d, training) for i, d in enumerate(prep.clients) if i]
    config = FederationConfig(
        rounds=settings.rounds,
        training=training,
        aggregator=cell.aggregator,
        byzantine=settings.byzantine,
        dp=dp,
        seed=cell.seed,
    )
    recorder = _RoundRecorder(1)
    model = _copy(prep.model)
    history = Federation(model, clients, prep.test, config, recorder).run(progress=False)
    obs = attacker.observations[0]
    know = FederationKnowledge(
        clients=len(clients),
        aggregator=cell.aggregator,
        byzantine=settings.byzantine,
        local_steps=settings.local_steps,
        lr=settings.lr,
        peer_examples=settings.examples,
        dp_clip=None if dp is None else dp.clip,
    )
    own = prep.clients[0]
    probe = _copy(prep.model)
    probe.load_state_dict(obs.before, strict=False)
    view = peer_view(obs, know)
    key = None
    if view is not None:  # the same change inverts to the same images: computed once
        digest = hashlib.sha1(view.target.numpy().tobytes()).hexdigest()
        key = (cell.dataset, cell.seed, settings, know.dp_clip, view.peers, view.combine, digest)
    recon = _INVERSIONS.get(key) if key else None
    if recon is None:
        recon = invert_peers(
            probe,
            obs,
            know,
            own.image_shape,
            mean_softmax(probe, own.x),
            PeerInversionConfig(iterations=settings.iterations, seed=cell.seed),
        )
        if key:
            if len(_INVERSIONS) > 256:
                _INVERSIONS.clear()
            _INVERSIONS[key] = recon
    vectors = torch.stack([u.flat(obs.keys) for u in recorder.updates])
    used = [i for i in contributors(cell.aggregator, vectors, settings.byzantine) if i != 0]
    # Krum chose the curious client's own upload: the round showed it nothing of its peers,
    # and its prior is scored against all of them
    scored_peers = used or list(range(1, len(clients)))
    truth = torch.cat([prep.clients[i].x for i in scored_peers])
    base = match(truth, own.x.mean(0, keepdim=True).expand(len(truth), -1, -1, -1))
    scored = match(truth, recon.images) if used and len(recon.images) else None
    verdicts = check_uploads(vectors)
    row = {
        **asdict(cell),
        "aggregator_used_peers": len(used),
        "reconstructed": scored is not None,
        "baseline_psnr": _mean(base.psnr),
        "baseline_ssim": _mean(base.ssim),
        "accuracy": history[-1].accuracy,
        "accuracy_start": history[0].accuracy,
        "attacker_norm_ratio": verdicts[0].norm_ratio,
        "attacker_cosine": verdicts[0].cosine,
        "attacker_flagged_norm": verdicts[0].norm_flagged,
        "attacker_flagged_cosine": verdicts[0].cosine_flagged,
        "peers_flagged": sum(v.flagged for v in verdicts[1:]),
        "inversion": recon.info,
        "seconds": time.perf_counter() - start,
    }
    if scored is not None:
        row.update(
            psnr_mean=_mean(scored.psnr),
            psnr_best=float(scored.psnr.max()),
            ssim_mean=_mean(scored.ssim),
            label_accuracy=_label_accuracy(
                recon.labels, torch.cat([prep.clients[i].y for i in used])
            ),
        )
    else:  # nothing of the peers in the change: the attacker is left with its prior
        row.update(
            psnr_mean=row["baseline_psnr"],
            psnr_best=row["baseline_psnr"],
            ssim_mean=row["baseline_ssim"],
            label_accuracy=None,
        )
    row["images"] = (truth, recon.images, scored)
    return row


def _label_accuracy(recovered: torch.Tensor, true: torch.Tensor) -> float:
    """Share of the true label multiset recovered (order-free)."""
    classes = int(max(recovered.max(), true.max())) + 1
    a = torch.bincount(recovered, minlength=classes)
    b = torch.bincount(true, minlength=classes)
    return float(torch.minimum(a, b).sum()) / max(1, len(true))


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def grid(
    datasets=DATASETS,
    aggregators=AGGREGATORS,
    noises=(None, 0.003, 0.01),
    uploads=("honest", "flip", "outlier"),
    seeds=range(5),
) -> list[Cell]:
    return [
        Cell(d, a, s, u, seed)
        for seed in seeds
        for d in datasets
        for a in aggregators
        for s in noises
        for u in uploads
    ]


def confidence(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (SciPy)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2 or float(x.std()) == 0.0:
        return float(x.mean()), 0.0
    low, high = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(x.mean()), float((high - low) / 2)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (data set, aggregator, DP, upload): means and 95% CIs over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["aggregator"], r["dp_noise"], r["upload"]), []).append(r)
    out = []
    for (d, a, s, u), rs in groups.items():
        entry = {"dataset": d, "aggregator": a, "dp_noise": s, "upload": u, "seeds": len(rs)}
        for key in (
            "psnr_mean",
            "psnr_best",
            "ssim_mean",
            "baseline_psnr",
            "accuracy",
            "label_accuracy",
            "attacker_norm_ratio",
            "attacker_cosine",
        ):
            m, h = confidence([r[key] for r in rs])
            entry[key], entry[f"{key}_ci"] = m, h
        entry["reconstructed"] = sum(r["reconstructed"] for r in rs)
        entry["flagged"] = sum(
            r["attacker_flagged_norm"] or r["attacker_flagged_cosine"] for r in rs
        )
        entry["peers_flagged"] = sum(r["peers_flagged"] for r in rs)
        out.append(entry)
    return out


def paired_gains(rows: list[dict], key: str = "psnr_mean") -> list[dict]:
    """Per cell, the gain of ``key`` over the mean aggregator with an honest upload and no
    DP on the same data set and seed (paired), as mean and 95% t-interval over seeds, and
    how many seeds reach the seed paper's +10%."""
    ref = {
        (r["dataset"], r["seed"]): r[key]
        for r in rows
        if r["aggregator"] == "mean" and r["dp_noise"] is None and r["upload"] == "honest"
    }
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if (r["dataset"], r["seed"]) in ref:
            k = (r["dataset"], r["aggregator"], r["dp_noise"], r["upload"])
            groups.setdefault(k, []).append(r[key] / ref[(r["dataset"], r["seed"])] - 1)
    out = []
    for (d, a, s, u), gains in groups.items():
        m, h = confidence(gains)
        out.append(
            {
                "dataset": d,
                "aggregator": a,
                "dp_noise": s,
                "upload": u,
                "gain": m,
                "gain_ci": h,
                "seeds_at_10pct": sum(g >= 0.10 for g in gains),
                "seeds": len(gains),
            }
        )
    return out


def with_settings(settings: CuriousSettings, **changes) -> CuriousSettings:
    return replace(settings, **changes)
