"""The in-process FL simulation: local training, rounds, aggregation, secure sum, DP."""

from gradguard.fl.aggregate import AGGREGATORS, aggregate
from gradguard.fl.client import Client, LocalTraining, local_update
from gradguard.fl.simulation import Federation, FederationConfig, RoundResult, ServerHook
from gradguard.fl.update import Update

__all__ = [
    "AGGREGATORS",
    "Client",
    "Federation",
    "FederationConfig",
    "LocalTraining",
    "RoundResult",
    "ServerHook",
    "Update",
    "aggregate",
    "local_update",
]
