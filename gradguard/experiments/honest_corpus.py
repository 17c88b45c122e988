"""A broad corpus of honest global models from real FedAvg training, cached on disk.

Each run trains one model family (with its norm) on one data set and partition with one
local optimiser, under an honest :class:`gradguard.fl.Federation`, and stores the global
model of every round (round 0 = the initial model) as safetensors under
``runs/corpus/<run>/``, so scoring the corpus again with new detectors or thresholds costs
no training. A snapshot comes with what a client would hold when it arrives: its template,
its local data (the receiving client rotates) and the last global model it accepted.

Three disjoint parts (:func:`corpus_runs`):

- ``evaluation`` (seeds 0-999): every zoo family on digits, Fashion-MNIST and a colour
  image folder (:mod:`.photo_patches`; ``resnet18`` there only, it expects 3 x 32 x 32),
  every optimiser, IID and Dirichlet(0.1); early, middle and last rounds. False positives
  are measured here.
- ``calibration`` (seeds 1000-1999): the same families, data sets and optimisers, other
  seeds. Thresholds are proposed from this part only.
- ``diverged`` (seeds 2000+): runs at learning rates far too high, trained until they
  explode or collapse. Not honest models a client should train on: the Guard must call them
  "cannot verify", never a named attack.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from gradguard.data import Dataset, partition, train_test
from gradguard.errors import GradguardError
from gradguard.fl import Client, Federation, FederationConfig, LocalTraining
from gradguard.models import build_model

CACHE = Path("runs/corpus")
PARTS = ("evaluation", "calibration", "diverged")
SEED_BASE = {"evaluation": 0, "calibration": 1000, "diverged": 2000}

# name -> LocalTraining options (batch size and epochs come from the spec)
OPTIMISERS: dict[str, dict] = {
    "sgd-momentum-low-lr": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
    "sgd-momentum-high-lr": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 1e-3},
    "adamw-weight-decay": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05},
    "sgd-label-smoothing": {
        "optimizer": "sgd",
        "lr": 0.03,
        "momentum": 0.9,
        "label_smoothing": 0.1,
    },
}
DIVERGING: dict[str, dict] = {
    "sgd-lr-50": {"optimizer": "sgd", "lr": 50.0, "momentum": 0.9},
    "adam-lr-1": {"optimizer": "adam", "lr": 1.0},
}

SMALL = (
    ("mlp", None),
    ("convnet", None),
    ("resnet", "batch"),
    ("resnet", "group"),
    ("resnet", "layer"),
    ("vit-tiny", None),
)
RESNET18 = (("resnet18", "batch"), ("resnet18", "group"), ("resnet18", "layer"))
DATASETS = ("digits", "fashion-mnist", "photos")
PARTITIONS = ("iid", "dirichlet:0.1")


@dataclass(frozen=True)
class RunSpec:
    """One FedAvg run; every round's global model is stored, ``snapshots`` enter the corpus."""

    part: str
    model: str
    norm: str | None
    optimiser: str
    dataset: str
    partition: str
    seed: int
    rounds: int = 6
    clients: int = 4
    limit: int = 400  # training examples shared by the clients (seeded subset)
    epochs: int = 2
    batch_size: int = 32
    snapshots: tuple[int, ...] = (1, 3, 6)
    test_limit: int = 300

    @property
    def family(self) -> str:
        return self.model + (f"-{self.norm}" if self.norm else "")

    @property
    def name(self) -> str:
        part = self.partition.replace(":", "")
        return f"{self.part}-{self.dataset}-{self.family}-{self.optimiser}-{part}-s{self.seed}"

    @property
    def training(self) -> LocalTraining:
        opts = {**OPTIMISERS, **DIVERGING}[self.optimiser]
        return LocalTraining(epochs=self.epochs, batch_size=self.batch_size, **opts)


@dataclass(frozen=True)
class CorpusSpec:
    """Which runs make each part (defaults: the corpus of benchmarks/false_positives.py)."""

    datasets: tuple[str, ...] = DATASETS
    small_families: tuple[tuple[str, str | None], ...] = SMALL
    resnet18_families: tuple[tuple[str, str | None], ...] = RESNET18
    optimisers: tuple[str, ...] = tuple(OPTIMISERS)
    partitions: tuple[str, ...] = PARTITIONS
    rounds: int = 6
    snapshots: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # evaluation (every round is stored)
    calibration_snapshots: tuple[int, ...] = (1, 3, 6)
    limit: int = 400
    resnet18_rounds: int = 3
    resnet18_snapshots: tuple[int, ...] = (1, 2, 3)
    resnet18_limit: int = 120
    resnet18_runs: tuple[int, int] = (4, 3)  # evaluation, calibration (5-9 min each here)
    # optimisers per (data set, family) run in each part, by data set (default 1)
    evaluation_optimisers: tuple[tuple[str, int], ...] = (
        ("digits", 4),
        ("fashion-mnist", 2),
        ("photos", 2),
    )
    calibration_optimisers: tuple[tuple[str, int], ...] = (
        ("digits", 2),
        ("fashion-mnist", 2),
        ("photos", 1),
    )


# A few minutes' worth: digits, mlp and convnet, two optimisers, two rounds (``--quick``).
QUICK = CorpusSpec(
    datasets=("digits",),
    small_families=(("mlp", None), ("convnet", None)),
    resnet18_families=(),
    optimisers=("adam", "sgd-momentum-high-lr"),
    rounds=2,
    snapshots=(1, 2),
    calibration_snapshots=(1, 2),
    limit=200,
    evaluation_optimisers=(("digits", 2),),
)


def corpus_runs(part: str, spec: CorpusSpec = CorpusSpec()) -> list[RunSpec]:
    """The runs of one part.

    ``evaluation``: each (data set, small family) with ``evaluation_optimisers`` optimisers
    (cycled so that all are used), partitions alternating, every round a snapshot; resnet18
    (photos only, the costliest) ``resnet18_runs`` runs, norms and optimisers cycling.
    ``calibration``: each (data set, family) with ``calibration_optimisers`` other
    optimisers, and ``resnet18_runs`` resnet18 runs. The first run of each (data set, family)
    also contributes its initial model (round 0).
    """
    if part not in PARTS:
        raise GradguardError(f"unknown corpus part {part!r}; valid: {', '.join(PARTS)}")
    if part == "diverged":
        return _diverged(spec)
    runs: list[RunSpec] = []
    seed = SEED_BASE[part]
    opts = spec.optimisers
    combos = [(d, f) for d in spec.datasets for f in spec.small_families]
    for c, (dataset, (model, norm)) in enumerate(combos):
        if part == "evaluation":
            k = dict(spec.evaluation_optimisers).get(dataset, 1)
            chosen = [(c + j) % len(opts) for j in range(k)]
            snaps = spec.snapshots
        else:
            k = dict(spec.calibration_optimisers).get(dataset, 1)
            chosen = [(c + 2 * j) % len(opts) for j in range(k)]
            snaps = spec.calibration_snapshots
        for i, o in enumerate(chosen):
            runs.append(
                RunSpec(
                    part,
                    model,
                    norm,
                    opts[o],
                    dataset,
                    spec.partitions[(c + i) % len(spec.partitions)],
                    seed,
                    rounds=spec.rounds,
                    limit=spec.limit,
                    snapshots=((0,) if i == 0 else ()) + snaps,
                )
            )
            seed += 1
    if "photos" in spec.datasets and spec.resnet18_families:
        seed = SEED_BASE[part] + 900
        fams = spec.resnet18_families
        count = spec.resnet18_runs[0 if part == "evaluation" else 1]
        shift = int(part == "evaluation")
        for i in range(count):
            model, norm = fams[(i + shift) % len(fams)]
            o = i + shift if part == "evaluation" else (i + 1) % len(opts)
            runs.append(
                RunSpec(
                    part,
                    model,
                    norm,
                    opts[o % len(opts)],
                    "photos",
                    spec.partitions[(i + shift) % len(spec.partitions)],
                    seed + shift,
                    rounds=spec.resnet18_rounds,
                    limit=spec.resnet18_limit,
                    epochs=1,
                    snapshots=((0,) if i < len(fams) else ()) + spec.resnet18_snapshots,
                )
            )
            seed += 1
    return runs


def _diverged(spec: CorpusSpec) -> list[RunSpec]:
    seed = SEED_BASE["diverged"]
    settings = [
        ("mlp", None, "sgd-lr-50", "digits"),
        ("mlp", None, "adam-lr-1", "fashion-mnist"),
        ("convnet", None, "sgd-lr-50", "photos"),
        ("resnet", "batch", "sgd-lr-50", "fashion-mnist"),
        ("vit-tiny", None, "adam-lr-1", "digits"),
    ]
    return [
        RunSpec(
            "diverged",
            model,
            norm,
            opt,
            dataset,
            "iid",
            seed + i,
            rounds=3,
            limit=spec.limit,
            snapshots=(1, 2, 3),
        )
        for i, (model, norm, opt, dataset) in enumerate(settings)
    ]


@dataclass
class CorpusModel:
    """One global model as a client receives it."""

    run: RunSpec
    round: int  # 0: the initial model, before any training
    accuracy: float  # on the held-out test subset
    state: dict[str, torch.Tensor]
    template: nn.Module
    data: Dataset  # the receiving client's local data
    client: int
    previous: dict[str, torch.Tensor] | None = None  # the last global model it accepted

    @property
    def key(self) -> str:
        return f"{self.run.name}/round{self.round}"

    def record(self) -> dict:
        """What the tables group by: family, norm, optimiser, lr, data set, partition, ..."""
        r = self.run
        t = r.training
        return {
            "key": self.key,
            "part": r.part,
            "model": r.model,
            "family": r.family,
            "norm": r.norm or "-",
            "optimiser": r.optimiser,
            "lr": t.lr,
            "dataset": r.dataset,
            "partition": r.partition,
            "seed": r.seed,
            "round": self.round,
            "stage": stage(self.round, r.rounds),
            "accuracy": self.accuracy,
            "client": self.client,
            "local_examples": len(self.data),
        }


def stage(rnd: int, rounds: int) -> str:
    if rnd == 0:
        return "initial"
    if rnd == rounds:
        return "last"
    return "early" if rnd <= rounds // 3 else "middle"


@lru_cache(maxsize=4)
def load_data(name: str) -> tuple[Dataset, Dataset]:
    if name == "photos":
        from gradguard.experiments import photo_patches

        return photo_patches.load()
    return train_test(name)


def _split(run: RunSpec) -> tuple[list[Dataset], Dataset]:
    train, test = load_data(run.dataset)
    g = torch.Generator().manual_seed(run.seed)
    if run.limit < len(train):
        train = train.subset(torch.randperm(len(train), generator=g)[: run.limit])
    if run.test_limit < len(test):
        test = test.subset(torch.randperm(len(test), generator=g)[: run.test_limit])
    return partition(train, run.clients, run.partition, seed=run.seed), test


def _template(run: RunSpec, test: Dataset) -> nn.Module:
    return build_model(run.model, test.image_shape, test.num_classes, norm=run.norm)


def train_run(run: RunSpec, cache: Path = CACHE) -> Path:
    """Train ``run`` (unless cached) and store every round's global model; its folder."""
    from safetensors.torch import save_file

    from gradguard.metrics import accuracy

    folder = Path(cache) / run.name
    meta_path = folder / "meta.json"
    if meta_path.exists() and _same_training(json.loads(meta_path.read_text())["run"], run):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    parts, test = _split(run)
    torch.manual_seed(run.seed)
    model = _template(run, test)
    fed = Federation(
        model,
        [Client(i, d, run.training) for i, d in enumerate(parts)],
        test,
        FederationConfig(rounds=run.rounds, training=run.training, seed=run.seed),
    )
    accuracies = [accuracy(model, test.x, test.y)]
    save_file(_state(model), folder / "round0.safetensors")
    for rnd in range(1, run.rounds + 1):
        accuracies.append(fed.round(rnd).accuracy)
        save_file(_state(model), folder / f"round{rnd}.safetensors")
    meta_path.write_text(json.dumps({"run": asdict(run), "accuracy": accuracies}, indent=1))
    return folder


def _same_training(cached: dict, run: RunSpec) -> bool:
    """Whether a cached run was trained exactly as ``run`` (snapshots do not matter)."""
    want = json.loads(json.dumps(asdict(run)))
    return {k: v for k, v in cached.items() if k != "snapshots"} == {
        k: v for k, v in want.items() if k != "snapshots"
    }


def build(
    runs: list[RunSpec], cache: Path = CACHE, on_run: Callable[[RunSpec], None] | None = None
) -> None:
    """Train every run that is not cached yet."""
    for run in runs:
        train_run(run, cache)
        if on_run:
            on_run(run)


def models(runs: list[RunSpec], cache: Path = CACHE) -> Iterator[CorpusModel]:
    """Every snapshot of ``runs`` (trained first where not cached), as a client receives it."""
    from safetensors.torch import load_file

    for run in runs:
        folder = train_run(run, cache)
        meta = json.loads((folder / "meta.json").read_text())
        parts, test = _split(run)
        template = _template(run, test)
        for rnd in run.snapshots:
            client = rnd % run.clients
            previous = load_file(folder / f"round{rnd - 1}.safetensors") if rnd else None
            yield CorpusModel(
                run,
                rnd,
                meta["accuracy"][rnd],
                load_file(folder / f"round{rnd}.safetensors"),
                template,
                parts[client],
                client,
                previous,
            )


def size(runs: list[RunSpec]) -> int:
    return sum(len(r.snapshots) for r in runs)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every state entry (integer buffers too), contiguous, as a server sends it."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class Composition:
    """Counts per axis of a list of records (for the reports)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[dict]) -> Composition:
        axes = ("family", "norm", "optimiser", "dataset", "partition", "stage")
        counts: dict[str, dict[str, int]] = {}
        for axis in axes:
            for r in records:
                counts.setdefault(axis, {})
                counts[axis][str(r[axis])] = counts[axis].get(str(r[axis]), 0) + 1
        return cls(counts)
