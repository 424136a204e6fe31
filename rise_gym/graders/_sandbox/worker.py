"""The parent side of one sandbox slot: start a zygote in the strongest isolation available.

Launch strategies, strongest first:

- ``root`` (we are root): ``unshare --net --pid --mount-proc --kill-child``; the zygote
  moves into its own root file system (`filesystem.PrivateRoot`: read-only system and
  Python folders, a fresh size-limited /tmp per job) and runs each program as a fresh
  unprivileged uid (``UID_BASE`` + the worker's pid) without capabilities, so one
  slot's fork bomb cannot use up another slot's process limit and no program can
  touch root's files.
- ``user`` (not root, user namespaces allowed): the same namespaces inside a user
  namespace where we are root (``--map-root-user``), so the zygote can build the same
  private root; programs keep your uid there but no capability, and see none of your
  files but the read-only system and Python folders.
- ``none``: no namespaces (no network isolation; descendants tracked through /proc).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rise_gym.errors import SandboxError
from rise_gym.graders._sandbox.zygote import descendants, read_frame, write_frame

logger = logging.getLogger(__name__)

Isolation = Literal["auto", "namespaces", "none"]
ZYGOTE = Path(__file__).with_name("zygote.py")
UID_BASE = 1_900_000_000
STARTUP_TIMEOUT = 30.0
RESPONSE_GRACE = 15.0
"""Seconds past a job's own timeout before a silent zygote counts as broken."""

SCRUBBED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    # one program per core already; BLAS/OpenMP threads would count against RLIMIT_NPROC
    **dict.fromkeys(["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"], "1"),
}
"""The whole environment of the zygote and of every program (nothing else is inherited)."""

_UNSHARE_FLAGS = ["--net", "--pid", "--mount-proc", "--kill-child"]
_STRATEGY_PREFIX = {
    "root": _UNSHARE_FLAGS,
    "user": ["--map-root-user", *_UNSHARE_FLAGS],
}


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (setrlimit in the child; the disk as the size of /tmp)."""

    memory_bytes: int
    processes: int
    file_size_bytes: int
    open_files: int
    output_bytes: int
    disk_bytes: int
    inodes: int


class WorkerLost(SandboxError):
    """The zygote was gone before it took the job: the job never started."""


class Worker:
    """One zygote process and the pipes to it; jobs run one at a time."""

    def __init__(self, isolation: Isolation):
        """Start a zygote with the strongest strategy ``isolation`` allows.

        Raises:
            SandboxError: No strategy could start (the message lists why each failed).
        """
        failures = []
        for strategy in _strategies(isolation):
            try:
                self._start(strategy)
                return
            except SandboxError as error:
                failures.append(f"{strategy}: {error}")
        raise SandboxError(
            "could not start a sandbox worker (" + "; ".join(failures) + "); on Linux install "
            "util-linux's `unshare` and allow namespaces, or pass isolation='none' to run "
            "without them"
        )

    def _start(self, strategy: str) -> None:
        prefix: list[str] = []
        if strategy != "none":
            unshare = shutil.which("unshare")
            if unshare is None:
                raise SandboxError("`unshare` was not found")
            prefix = [unshare, *_STRATEGY_PREFIX[strategy]]
        self._errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-I", str(ZYGOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=SCRUBBED_ENV,
            cwd="/",
            start_new_session=True,
        )
        self.uid = UID_BASE + self.process.pid if os.geteuid() == 0 and strategy != "user" else None
        self.strategy = strategy
        self.reusable = False
        self._send({"uid": self.uid, "isolate_fs": strategy != "none"})
        hello = self._receive(STARTUP_TIMEOUT)
        self.network_isolated = strategy != "none" and hello["interfaces"] == ["lo"]
        self.reusable = True
        if not self.network_isolated:
            warnings.warn(
                f"the code sandbox runs without network isolation (strategy {strategy!r}): "
                "graded programs can reach the network",
                RuntimeWarning,
                stacklevel=2,
            )
        logger.info("sandbox worker %d started: %s, %s", self.process.pid, strategy, hello)

    @property
    def alive(self) -> bool:
        """Whether the zygote is still running."""
        return self.process.poll() is None

    def run(self, program: str, tests: str, nonce: str, timeout: float, limits: Limits) -> Any:
        """Grade one program; returns the zygote's raw reply.

        The worker is `reusable` again only once a whole reply came back and the zygote
        did not ask to be retired: one stopped half-way is never given another job.

        Raises:
            WorkerLost: The zygote was already dead: the job did not start.
            SandboxError: The zygote died or stopped answering (it is killed).
        """
        self.reusable = False
        try:
            self._send({"program": program, "timeout": timeout, "limits": asdict(limits)})
            self._receive(STARTUP_TIMEOUT)  # {"started": true}
        except SandboxError as error:
            raise WorkerLost(str(error)) from error
        self._send({"tests": tests, "nonce": nonce})
        reply = self._receive(timeout + RESPONSE_GRACE)
        self.reusable = not reply.pop("retire")
        return reply

    def _send(self, message: Any) -> None:
        assert self.process.stdin is not None
        try:
            write_frame(self.process.stdin.fileno(), message)
        except OSError as error:
            raise self._broken(f"failed: {error!r}") from error

    def _receive(self, timeout: float) -> Any:
        assert self.process.stdout is not None
        try:
            reply = read_frame(self.process.stdout.fileno(), time.monotonic() + timeout)
        except (OSError, EOFError, TimeoutError, ValueError) as error:
            raise self._broken(f"failed: {error!r}") from error
        if reply is None:
            raise self._broken("exited unexpectedly")
        return reply

    def _broken(self, what: str) -> SandboxError:
        """Kill the zygote and everything under it; the error to raise says why."""
        _kill_tree(self.process.pid)
        self.process.wait()
        error = SandboxError(f"the sandbox worker {what}{self._stderr()}")
        self.close()
        return error

    def close(self) -> None:
        """Stop the zygote (its namespace and every process in it die with it)."""
        if self.alive:
            assert self.process.stdin is not None
            self.process.stdin.close()  # a clean exit at end of input
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                _kill_tree(self.process.pid)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._errors):
            if stream is not None:
                stream.close()

    def _stderr(self) -> str:
        try:
            self._errors.seek(0)
            text = self._errors.read()[-2_000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its stderr: {text}" if text else ""


def _kill_tree(root: int) -> None:
    """Stop ``root`` and its descendants until no new one appears, then kill them all."""
    frozen: set[int] = set()
    while new := {root, *descendants(root)} - frozen:
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, number: signal.Signals) -> None:
    try:
        os.kill(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def _strategies(isolation: Isolation) -> list[str]:
    namespaces = "root" if os.geteuid() == 0 else "user"
    if isolation == "auto":
        return [namespaces, "none"]
    if isolation == "namespaces":
        return [namespaces]
    if isolation == "none":
        return ["none"]
    raise ValueError(f"isolation must be 'auto', 'namespaces' or 'none', got {isolation!r}")
