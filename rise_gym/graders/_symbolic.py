"""Symbolic equivalence through math-verify, under a hard timeout that works anywhere.

math-verify's own timeouts use ``signal.alarm``, which fails off the main thread, and
multiprocessing cannot start children from daemonic pool workers. Instead a persistent
child (`rise_gym.graders._verify_worker`) is started with `subprocess.Popen` and spoken to
over a pipe; a request that runs past its deadline gets the child killed and replaced.
After the first replacement a spare child is kept warm, so inputs that hang math-verify
(they tend to recur) cost only their timeout. Requests are serialised by a lock, so any
thread may call `SymbolicVerifier.check`. POSIX only (``select`` on a pipe).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rise_gym.errors import GraderTimeout, RiseGymError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 120.0
"""Seconds a fresh child may take to import math-verify (generous: CPUs may be shared)."""

# Run the worker file by path, without the current directory or the worker's own folder on
# sys.path: that folder holds math.py and code.py, which would shadow the standard library.
_BOOTSTRAP = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
_WORKER_FILE = str(Path(__file__).with_name("_verify_worker.py"))


class SymbolicVerifier:
    """math-verify in a child process, with a hard per-request timeout.

    The child starts on first use, is replaced after a timeout or a crash, and is killed at
    interpreter exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._spare: _Worker | None = None

    def check(self, gold: str, pred: str | None, timeout: float) -> bool | None:
        """Whether ``pred`` is equivalent to ``gold`` according to math-verify.

        Args:
            gold: The reference answer (LaTeX or plain text, without ``$`` delimiters).
            pred: The predicted answer, or None to only check that ``gold`` parses.
            timeout: Seconds the request may run once a child is ready.

        Returns:
            None when ``gold`` does not parse (or parsing it timed out), else whether the
            two are equivalent (False when ``pred`` is None or checking it timed out).

        Raises:
            RiseGymError: No child could be started.
        """
        request = json.dumps({"gold": gold, "pred": pred, "cpu_seconds": timeout + 1.0})
        with self._lock:
            worker = self._send(request.encode() + b"\n")
            deadline = time.monotonic() + timeout
            gold_parsed = False
            try:
                if not worker.receive(deadline)["gold"]:
                    return None
                gold_parsed = True
                return False if pred is None else bool(worker.receive(deadline)["correct"])
            except GraderTimeout as error:
                self._replace()
                if gold_parsed:
                    logger.warning("answer %r graded 0: %s", (pred or "")[:200], error)
                    return False
                logger.warning("reference %r skipped: %s", gold[:200], error)
                return None

    def close(self) -> None:
        """Kill the children, if any; the next request starts a new one.

        Takes no lock, so it is safe at interpreter exit while a daemon thread waits on a
        child; a request in flight then sees a dead child and grades 0.
        """
        for worker in (self._worker, self._spare):
            if worker is not None:
                worker.kill()
        self._worker = self._spare = None

    def abandon(self) -> None:
        """Drop children inherited through ``fork`` without killing them: they are the parent's."""
        for worker in (self._worker, self._spare):
            if worker is not None:
                worker.close_pipes()
        self._worker = self._spare = None

    def _send(self, line: bytes) -> _Worker:
        """Write a request to a ready child, replacing one found dead while idle."""
        for _attempt in range(2):
            if self._worker is None:
                self._worker = _Worker()
            try:
                self._worker.wait_ready()
                self._worker.send(line)
                return self._worker
            except (BrokenPipeError, GraderTimeout) as error:
                self._replace()
                failure = error
        raise RiseGymError(
            f"the math-verify worker fails to start or dies at once ({failure}); "
            f"check that `{sys.executable} -c 'import math_verify'` works"
        )

    def _replace(self) -> None:
        if self._worker is not None:
            self._worker.kill()
        self._worker, self._spare = self._spare or _Worker(), _Worker()


class _Worker:
    """One child process and the bytes read from it but not yet consumed."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _WORKER_FILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
        )
        self.ready = False
        self._pending = b""

    def wait_ready(self) -> None:
        if not self.ready:
            greeting = self.receive(time.monotonic() + STARTUP_TIMEOUT)
            if greeting != "ready":
                raise GraderTimeout(f"unexpected greeting {greeting!r}")
            self.ready = True

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line)
        self.process.stdin.flush()

    def receive(self, deadline: float) -> Any:
        """Read one protocol line; raise `GraderTimeout` past the deadline or on EOF."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([descriptor], [], [], remaining)[0]:
                raise GraderTimeout("math-verify ran past the timeout; its worker was replaced")
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise GraderTimeout("the math-verify worker died; it was replaced")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


_verifier = SymbolicVerifier()


def verifier() -> SymbolicVerifier:
    """The process-wide verifier (a fresh one in each forked child)."""
    return _verifier


def _close_at_exit() -> None:
    _verifier.close()


def _forget_parent_workers() -> None:
    global _verifier
    inherited, _verifier = _verifier, SymbolicVerifier()
    inherited.abandon()


atexit.register(_close_at_exit)
os.register_at_fork(after_in_child=_forget_parent_workers)
