"""Find and end every process of one local Flower deployment, even after its parent died.

Each process a :class:`~gradguard.integrations.flower.deployment.LocalDeployment` starts
carries ``GRADGUARD_DEPLOYMENT=<token>`` in its environment, and everything those processes
spawn (SuperExec, ServerApp and ClientApp runners) inherits it, so the token finds them
wherever they were reparented. ``python reaper.py TOKEN`` is the deployment's watchdog: it
blocks on its stdin, a pipe only the deployment's parent holds, and when that pipe closes
(the parent exited, however it exited: SIGKILL included) it ends every process carrying the
token. Standard library only, so it starts fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

MARKER_ENV = "GRADGUARD_DEPLOYMENT"


def marked(token: str) -> list[int]:
    """PIDs of the live processes whose environment carries this deployment's token."""
    needle = f"{MARKER_ENV}={token}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in env.split(b"\0") and alive(int(entry)):
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def started(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot; '' if gone): a PID with another
    start time is another process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def end(token: str, extra: tuple[int, ...] = (), grace: float = 2.0) -> list[int]:
    """SIGTERM every process carrying ``token`` (and the ``extra`` PIDs, for as long as they
    are the processes they were when called), SIGKILL what is left after ``grace`` seconds;
    processes spawned meanwhile are caught by the rescans. Returns the PIDs still running
    at the end (none, unless a process cannot be killed)."""
    deadline = time.monotonic() + grace
    signalled: set[int] = set()
    sig = signal.SIGTERM
    identity = {pid: started(pid) for pid in extra}
    while True:
        same = [p for p, t in identity.items() if t and started(p) == t]
        pids = [p for p in {*marked(token), *same} if alive(p)]
        if not pids:
            return []
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                return pids
            sig, signalled, deadline = signal.SIGKILL, set(), time.monotonic() + 2.0
        for pid in pids:
            if pid not in signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                signalled.add(pid)
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    token = argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal is the parent's
    while sys.stdin.buffer.read(4096):  # returns b"" once every writer is gone
        pass
    left = end(token)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
