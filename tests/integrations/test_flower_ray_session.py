"""Inside a gradguard Ray session, the end of a Flower run stops its actors but keeps Ray
for the next run (Flower's backend alone calls ray.shutdown() after every run)."""

from types import SimpleNamespace

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")
pytest.importorskip("ray", reason="needs flwr[simulation]")

from flwr.server.superlink.fleet.vce.backend import raybackend  # noqa: E402

from gradguard.integrations.flower.simulation import _ray_kept_between_runs  # noqa: E402

pytestmark = pytest.mark.flower


def test_run_end_keeps_ray_inside_a_session_only(monkeypatch):
    calls = []
    monkeypatch.setattr(raybackend.ray, "shutdown", lambda: calls.append("shutdown"))
    pool = SimpleNamespace(terminate_all_actors=lambda: calls.append("actors"))
    backend = SimpleNamespace(pool=pool)
    with _ray_kept_between_runs():
        raybackend.RayBackend.terminate(backend)
    assert calls == ["actors"]
    raybackend.RayBackend.terminate(backend)  # outside: Flower's own behaviour again
    assert calls == ["actors", "actors", "shutdown"]
