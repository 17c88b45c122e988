"""The scenario: one federation whose server turns malicious in chosen rounds, as values.

A :class:`Scenario` fixes everything a run needs (data, model, clients, rounds, local
training, the attack and when it strikes, the guard) as plain values, so every engine runs
the same federation; it travels to Flower nodes as a Flower run config
(:meth:`Scenario.to_run_config` / :meth:`Scenario.from_run_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from gradguard.fl import LocalTraining
from gradguard.options import parse_pairs


@dataclass(frozen=True)
class Scenario:
    """A federation and the attack campaign against it."""

    dataset: str = "digits"
    model: str = "mlp"
    norm: str | None = None
    clients: int = 4
    rounds: int = 10
    partition: str = "iid"
    train_limit: int | None = None
    aux_size: int = 128  # training images held back as the server's auxiliary data
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.3
    steps: int | None = None
    attack: str = "imprint"
    attack_options: tuple[tuple[str, Any], ...] = ()
    attack_rounds: tuple[int, ...] = (3, 5)
    targets: tuple[int, ...] | None = None  # client ids the attack targets; None: all
    threshold_db: float = 30.0
    guard_policy: str = "abstain"
    guard_detectors: tuple[str, ...] = ()  # empty: the Guard's defaults
    guard_thresholds: tuple[tuple[str, float], ...] = ()
    guard_stop_at_first: bool = True  # False: every detector runs (the report compares them)
    secure_aggregation: bool = False  # the server sees only the round's sum
    refusal: str = "drop"  # a guarded client's refused secure round: "drop" or "cover"
    seed: int = 0

    @property
    def training(self) -> LocalTraining:
        return LocalTraining(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, steps=self.steps
        )

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """Flat scalars for a Flower run config (``flwr run --run-config`` / pyproject)."""
        out: dict[str, str | int | float | bool] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            key = f.name.replace("_", "-")
            if f.name in ("attack_options", "guard_thresholds"):
                out[key] = ",".join(f"{k}={val}" for k, val in v)
            elif isinstance(v, tuple):
                out[key] = ",".join(str(x) for x in v)
            elif v is None:
                out[key] = ""
            else:
                out[key] = v
        return out

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> Scenario:
        """Inverse of :meth:`to_run_config`; keys not given keep their defaults."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in cfg:
                continue
            v = cfg[key]
            items = [x.strip() for x in str(v).split(",") if x.strip()]
            if f.name == "attack_options":
                kw[f.name] = tuple(parse_pairs(items).items())
            elif f.name == "guard_thresholds":
                kw[f.name] = tuple((k, float(x)) for k, x in parse_pairs(items).items())
            elif f.name == "attack_rounds":
                kw[f.name] = tuple(int(x) for x in items)
            elif f.name == "targets":
                all_clients = str(v).strip() in ("", "all")
                kw[f.name] = None if all_clients else tuple(int(x) for x in items)
            elif f.name == "guard_detectors":
                kw[f.name] = tuple(items)
            elif f.name in ("guard_stop_at_first", "secure_aggregation"):
                kw[f.name] = v if isinstance(v, bool) else str(v).strip().lower() == "true"
            elif f.name in ("norm", "train_limit", "steps"):
                kw[f.name] = None if v in ("", None) else (str(v) if f.name == "norm" else int(v))
            else:
                kw[f.name] = type(getattr(cls(), f.name))(v)
        return cls(**kw)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["attack_options"] = dict(self.attack_options)
        d["guard_thresholds"] = dict(self.guard_thresholds)
        return d
