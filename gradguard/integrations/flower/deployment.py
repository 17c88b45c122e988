"""Run a scenario on Flower's deployment engine, all on 127.0.0.1.

:class:`LocalDeployment` starts ``flower-superlink`` and one ``flower-supernode`` per client
on free local ports. Each SuperNode's ``--node-config`` holds what belongs to that client:
its ``partition-id``, whether it runs the guard (``guarded``) and any guard settings of its
operator (``guard-policy``, ``guard-detectors``, ``guard-thresholds``). :meth:`run` writes a
Flower app folder (:func:`write_app`: a ``pyproject.toml`` naming gradguard's ServerApp and
ClientApp, the scenario as its run config, the server's side) and starts it with
``flwr run``; the server app writes its result as JSON (run-config key ``results-path``).
Telemetry is off and no dependency is installed at run time.

No process outlives the deployment. Every child runs in its own session (process group)
and carries a token in its environment that everything it spawns inherits; :meth:`stop`
ends the groups, the descendants and every process carrying the token (wherever it was
reparented), on normal exit, on an exception, and on SIGTERM/SIGINT/SIGHUP to the parent
(signal handlers). A watchdog (:mod:`.reaper`) does the same if the parent dies without
running any of that (SIGKILL). While a run is under way, a SuperLink or SuperNode that
exits ends the run at once (the deployment is stopped and :meth:`run` raises) instead of
leaving ``flwr run`` waiting for replies that will never come.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gradguard.bench.records import RunResult, result_from_dict
from gradguard.bench.scenario import Scenario
from gradguard.bench.setup import guarded_clients
from gradguard.errors import GradguardError
from gradguard.integrations.flower import reaper

log = logging.getLogger("gradguard.flower")

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


def _wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GradguardError(f"the SuperLink exited with code {proc.returncode}")
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


def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def node_config_arg(config: Mapping[str, Any]) -> str:
    """``flower-supernode --node-config`` text: ``key=value`` pairs, TOML values."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class LocalDeployment:
    """SuperLink + ``clients`` SuperNodes on 127.0.0.1; use as a context manager.

    ``guarded`` picks the partitions whose SuperNode runs the guard (True/"all",
    False/"none", ids); ``node_config`` adds keys to every SuperNode's node config (an
    operator's guard settings, say).
    """

    def __init__(
        self,
        clients: int,
        workdir: Path | None = None,
        *,
        guarded: bool | str | Iterable[int] = True,
        node_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.clients = clients
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gradguard-flower-"))
        self.guarded = guarded_clients(guarded, clients)
        self.node_config = dict(node_config or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.token = uuid.uuid4().hex  # marks every process of this deployment
        self.env = {
            **os.environ,
            **ENV,
            "FLWR_HOME": str(self.workdir / "flwr-home"),
            reaper.MARKER_ENV: self.token,
        }
        # The SuperLink and SuperNodes spawn flower-superexec / flwr-serverapp by name.
        self.env["PATH"] = os.pathsep.join(
            (str(Path(sys.executable).parent), os.environ.get("PATH", ""))
        )
        root = str(Path(__file__).resolve().parents[3])
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.port = free_port()  # the SuperLink serves its Fleet, Control and Runtime APIs here
        self._logs: list[Any] = []
        self._watchdog: subprocess.Popen | None = None
        self._handlers: dict[int, Any] = {}
        self._lock = threading.RLock()
        self._stopping = False
        self._pending_signal: int | None = None

    def _start(self, name: str, args: list[str], log_name: str | None = None) -> subprocess.Popen:
        log_file = open(self.workdir / f"{log_name or name}.log", "w")  # noqa: SIM115
        self._logs.append(log_file)
        proc = subprocess.Popen(
            args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # its own process group: stop() ends the whole group
        )
        self.procs[name] = proc
        return proc

    def node_config_of(self, partition: int) -> dict[str, Any]:
        """The node config SuperNode ``partition`` is started with."""
        return {
            "partition-id": partition,
            "num-partitions": self.clients,
            "guarded": partition in self.guarded,
            **self.node_config,
        }

    def __enter__(self) -> LocalDeployment:
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "gradguard"\n\n[superlink.gradguard]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self._install_signal_handlers()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, reaper.__file__, self.token],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k != reaper.MARKER_ENV},
                start_new_session=True,
            )
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
            _wait_port(self.port, 90, self.procs["superlink"])
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
                        node_config_arg(self.node_config_of(pid)),
                    ],
                )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- stopping ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; the watchdog still covers us
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                self._handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, previous in self._handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.warning("gradguard: signal %s: stopping the Flower deployment", signum)
        if self._stopping:  # stop() is under way in this thread: it re-raises when done
            self._pending_signal = signum
            return
        previous = self._handlers.get(signum, signal.SIG_DFL)
        self.stop()
        _redeliver(signum, frame, previous)

    def pids(self) -> list[int]:
        """Every live process of this deployment: the children, their process groups, their
        descendants and whatever carries the deployment's token (reparented ones too)."""
        procs = list(self.procs.values())
        # A group whose leader we have not reaped is certainly ours (its ID cannot be
        # reused); members of the others still carry the token.
        groups = {p.pid for p in procs if p.poll() is None}
        found = set(reaper.marked(self.token))
        for proc in procs:
            found.add(proc.pid)
            found.update(_descendants(proc.pid))
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) in groups:  # fields: state, ppid, pgrp, ...
                found.add(int(stat.parent.name))
        found.discard(os.getpid())
        return sorted(p for p in found if reaper.alive(p))

    def stop(self, grace: float = 2.0) -> list[int]:
        """Stop every process of this deployment (SIGTERM, then SIGKILL after ``grace``
        seconds: Flower's ServerApp runner waits on its dead SuperLink) and the watchdog.
        Idempotent. Returns the PIDs that survived (none, unless unkillable)."""
        with self._lock:
            if self._stopping:
                return []
            self._stopping = True
            try:
                procs = list(self.procs.values())
                for proc in procs:  # whole groups first, then the stragglers
                    if proc.poll() is None:  # leader not reaped: the group ID is ours
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(proc.pid, signal.SIGTERM)
                left = reaper.end(self.token, tuple(self.pids()), grace=grace)
                for proc in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=2)
                if left:
                    log.error("gradguard: processes %s did not stop", left)
                self.procs.clear()
                for f in self._logs:
                    f.close()
                self._logs.clear()
                if self._watchdog is not None:
                    with contextlib.suppress(OSError):
                        self._watchdog.stdin.close()  # type: ignore[union-attr]
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._watchdog.wait(timeout=5)
                    self._watchdog = None
            finally:
                self._stopping = False
                handlers = dict(self._handlers)
                self._restore_signal_handlers()
                pending, self._pending_signal = self._pending_signal, None
            if pending is not None:
                _redeliver(pending, None, handlers.get(pending, signal.SIG_DFL))
            return left

    # -- running ----------------------------------------------------------------------------

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log"))
        )

    def _dead_node(self) -> str:
        for name, proc in list(self.procs.items()):
            if name.startswith(("superlink", "supernode")) and proc.poll() is not None:
                return f"{name} (pid {proc.pid}) exited with code {proc.returncode}"
        return ""

    def run(
        self,
        sc: Scenario,
        *,
        attacked: bool,
        run_config: Mapping[str, Any] | None = None,
        timeout: float = 300,
        poll: float = 0.2,
    ) -> RunResult:
        """``flwr run`` the scenario and wait for the server's result file.

        ``run_config`` adds keys to the run config (the server's side: it cannot switch a
        client's guard off or loosen it). A SuperLink or SuperNode that exits during the run
        stops the deployment and raises :class:`GradguardError` within ``poll`` seconds.
        """
        if not self.procs:
            raise GradguardError("the deployment is not running (use it as a context manager)")
        if dead := self._dead_node():
            self.stop()
            raise GradguardError(f"{dead} before the run; the deployment was stopped")
        results = self.workdir / f"result-{time.monotonic_ns()}.json"
        config = {
            **sc.to_run_config(),
            "guarded": ",".join(map(str, sorted(self.guarded))) or "none",  # the report's label
            "attacked": attacked,
            **dict(run_config or {}),
            "results-path": str(results),
        }
        app = write_app(self.workdir / "app", config)
        flwr = self._start(
            "flwr-run",
            [_bin("flwr"), "run", str(app), "gradguard", "--stream"],
            log_name=f"flwr-run-{results.stem}",
        )
        deadline = time.monotonic() + timeout
        try:
            while flwr.poll() is None:
                if dead := self._dead_node():
                    self.stop()
                    raise GradguardError(f"{dead} during the run; the deployment was stopped")
                if time.monotonic() > deadline:
                    raise GradguardError(f"the Flower run did not end in {timeout:.0f} s")
                time.sleep(poll)
        finally:
            if flwr.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(flwr.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    flwr.wait(timeout=5)
            self.procs.pop("flwr-run", None)
        grace = time.monotonic() + 10
        while not results.exists() and time.monotonic() < grace:
            time.sleep(poll)
        if not results.exists():
            raise GradguardError(
                f"the Flower run wrote no result (flwr run exit {flwr.returncode}); "
                f"logs in {self.workdir}"
            )
        return result_from_dict(json.loads(results.read_text()))


def run_deployment(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
) -> RunResult:
    """The ``flower-deployment`` engine (:mod:`gradguard.bench.engines`): the scenario on a
    fresh :class:`LocalDeployment` (``progress`` is not shown)."""
    with LocalDeployment(sc.clients, guarded=guarded) as deployment:
        return deployment.run(sc, attacked=attacked)


def _redeliver(signum: int, frame: Any, previous: Any) -> None:
    """Hand a signal on to the handler that was there before ours."""
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:  # SIG_DFL: end the way the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
