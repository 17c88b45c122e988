"""Run a scenario on Flower's deployment engine, all on 127.0.0.1.

:class:`LocalDeployment` starts ``flower-superlink`` and one ``flower-supernode`` per client
(each with its ``partition-id`` in ``--node-config``) on free local ports, writes a Flower
app folder (:func:`write_app`: a ``pyproject.toml`` naming gradguard's ServerApp and
ClientApp, the scenario as its run config) and starts it with ``flwr run``. The server app
writes its result as JSON (run-config key ``results-path``). Every process it started is
stopped by its PID on exit. Telemetry is off and no dependency is installed at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gradguard.errors import GradguardError
from gradguard.scenario import RunResult, Scenario, result_from_dict

ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def write_app(folder: Path, run_config: dict[str, Any]) -> Path:
    """A Flower app folder whose components are gradguard's apps (importable from the
    environment, so the app itself holds no code)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in run_config.items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "gradguard-flower-app"
version = "0.1.0"
description = "gradguard: a federation whose server may turn malicious"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "gradguard"

[tool.flwr.app.components]
serverapp = "gradguard.integrations.flower.apps:server"
clientapp = "gradguard.integrations.flower.apps:client"

[tool.flwr.app.config]
{config}
""")
    (folder / "README.md").write_text("gradguard Flower app (components live in gradguard).\n")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise GradguardError(f"the SuperLink did not open 127.0.0.1:{port} in {timeout:.0f} s")


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise GradguardError(f"{name} not found: install the flower extra")
    return found


class LocalDeployment:
    """SuperLink + ``clients`` SuperNodes on 127.0.0.1; use as a context manager."""

    def __init__(self, clients: int, workdir: Path | None = None) -> None:
        self.clients = clients
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gradguard-flower-"))
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, **ENV, "FLWR_HOME": str(self.workdir / "flwr-home")}
        # The SuperLink and SuperNodes spawn flower-superexec / flwr-serverapp by name.
        self.env["PATH"] = os.pathsep.join(
            (str(Path(sys.executable).parent), os.environ.get("PATH", ""))
        )
        root = str(Path(__file__).resolve().parents[3])
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.port = free_port()  # the SuperLink serves its Fleet, Control and Runtime APIs here

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        proc.log_file = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def __enter__(self) -> LocalDeployment:
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "gradguard"\n\n[superlink.gradguard]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        try:
            self._start(
                "superlink",
                [
                    _bin("flower-superlink"),
                    "--insecure",
                    "--isolation",
                    "subprocess",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--database",
                    str(self.workdir / "state.db"),
                    "--disable-runtime-dependency-installation",
                ],
            )
            _wait_port(self.port, 90)
            for pid in range(self.clients):
                self._start(
                    f"supernode-{pid}",
                    [
                        _bin("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{self.port}",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={pid} num-partitions={self.clients}",
                    ],
                )
        except Exception:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process this deployment started, and the processes they spawned
        (SuperExec, ServerApp, ClientApp runners), each by its PID."""
        pids = []
        for proc in self.procs:
            pids += [proc.pid, *_descendants(proc.pid)]
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            proc.log_file.close()  # type: ignore[attr-defined]
        for pid in pids:  # grandchildren are not ours to reap; make sure they are gone
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log"))
        )

    def run(self, sc: Scenario, *, guarded: str, attacked: bool, timeout: float = 300) -> RunResult:
        """``flwr run`` the scenario and wait for the server's result file."""
        results = self.workdir / f"result-{time.monotonic_ns()}.json"
        config = {
            **sc.to_run_config(),
            "guarded": guarded,
            "attacked": attacked,
            "results-path": str(results),
        }
        app = write_app(self.workdir / "app", config)
        out = subprocess.run(
            [_bin("flwr"), "run", str(app), "gradguard", "--stream"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        (self.workdir / "flwr-run.log").write_text(out.stdout + out.stderr)
        deadline = time.monotonic() + 30
        while not results.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not results.exists():
            raise GradguardError(
                f"the Flower run wrote no result (flwr run exit "
                f"{out.returncode}); logs in {self.workdir}"
            )
        return result_from_dict(json.loads(results.read_text()))
