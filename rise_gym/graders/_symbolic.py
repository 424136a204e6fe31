"""Symbolic equivalence through math-verify, under a hard timeout that works anywhere.

math-verify's own timeouts use ``signal.alarm``, which fails off the main thread, and
multiprocessing cannot start children from daemonic pool workers. Instead persistent
children (`rise_gym.graders._verify_worker`) are started with `subprocess.Popen` and
spoken to over pipes; a request that runs past its deadline gets its child killed, and a
fresh child is started at once in its place, so inputs that hang math-verify (they tend to
recur) cost only their timeout.

Any thread may call `SymbolicVerifier.check`. Each request takes a child of its own from
a pool of up to `MAX_WORKERS` (started on demand, kept between requests), so a slow
comparison never holds up a fast one on another thread unless every child is busy. A
request whose answer equals a reference already known to parse needs no child at all.
POSIX only (``select`` on a pipe).
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
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rise_gym.errors import GraderTimeout, RiseGymError

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 120.0
"""Seconds a fresh child may take to import math-verify (generous: CPUs may be shared)."""

MAX_WORKERS = max(8, min(32, os.cpu_count() or 1))
"""Children at most; a request past that many in flight waits for one to come free."""

KNOWN_GOLDS = 4096
"""References remembered as parsing, for the equal-answer shortcut."""

# Run the worker file by path, without the current directory or the worker's own folder on
# sys.path: that folder holds math.py and code.py, which would shadow the standard library.
_BOOTSTRAP = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
_WORKER_FILE = str(Path(__file__).with_name("_verify_worker.py"))


class SymbolicVerifier:
    """A pool of math-verify children, each request under a hard timeout.

    Children start on first use, a child is replaced after a timeout or a crash, and all
    are killed at interpreter exit.

    Args:
        max_workers: Children at most (requests past that wait for one to come free).
    """

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._max_workers = max_workers
        self._lock = threading.Condition()  # guards every attribute below; never held on I/O
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0  # children being started for a request, outside the lock
        self._generation = 0  # bumped by close(): children of an older one are not reused
        self._parsing_golds: OrderedDict[str, None] = OrderedDict()

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
        with self._lock:
            if pred == gold and gold in self._parsing_golds:
                return True
        request = json.dumps({"gold": gold, "pred": pred, "cpu_seconds": timeout + 1.0})
        worker = self._send(request.encode() + b"\n")
        healthy = gold_parsed = correct = False
        try:
            deadline = time.monotonic() + timeout
            gold_parsed = bool(worker.receive(deadline)["gold"])
            if gold_parsed and pred is not None:
                correct = bool(worker.receive(deadline)["correct"])
            healthy = True
        except GraderTimeout as error:
            if gold_parsed:
                logger.warning("answer %r graded 0: %s", (pred or "")[:200], error)
            else:
                logger.warning("reference %r skipped: %s", gold[:200], error)
        finally:
            self._release(worker, healthy)
        if not gold_parsed:
            return None
        self._remember(gold)
        return correct

    def close(self) -> None:
        """Kill the children; the next request starts new ones.

        A request in flight sees its child die and grades 0.
        """
        with self._lock:
            idle, busy, self._idle = self._idle, list(self._busy), []
            self._generation += 1
        for worker in idle:
            worker.kill()
        for worker in busy:
            worker.process.kill()  # its request closes the pipes when it returns

    def abandon(self) -> None:
        """Drop children inherited through ``fork`` without killing them: they are the parent's."""
        for worker in (*self._idle, *self._busy):
            worker.close_pipes()
        self._idle, self._busy = [], set()

    def _send(self, line: bytes) -> _Worker:
        """Write a request to a ready child of the pool, replacing one found dead while idle."""
        for _attempt in range(2):
            worker = self._acquire()
            try:
                worker.wait_ready()
                worker.send(line)
                return worker
            except (OSError, ValueError, GraderTimeout) as error:  # a dead or closed child
                self._release(worker, healthy=False)
                failure = error
        raise RiseGymError(
            f"the math-verify worker fails to start or dies at once ({failure}); "
            f"check that `{sys.executable} -c 'import math_verify'` works"
        )

    def _acquire(self) -> _Worker:
        """An idle child (ready ones first), else a new one, or the first to come free.

        When other requests are in flight and no child is left idle, a spare is started
        as well, so that the next concurrent request finds one warming up.
        """
        while True:
            with self._lock:
                if self._idle:
                    ready = [worker for worker in self._idle if worker.ready]
                    worker = ready[-1] if ready else self._idle[-1]
                    self._idle.remove(worker)
                    self._busy.add(worker)
                    crowded = not self._idle and len(self._busy) > 1
                    break
                if self._size() >= self._max_workers:
                    self._lock.wait()
                    continue
            self._start_spare()
        if crowded:
            self._start_spare()
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        """Return a child to the pool, or kill it and start a fresh one in its place."""
        with self._lock:
            self._busy.discard(worker)
            current = worker.generation == self._generation
            if healthy and current:
                self._idle.append(worker)
            self._lock.notify_all()
        if not (healthy and current):
            worker.kill()
            if current:  # warm a replacement now: inputs that hang math-verify tend to recur
                self._start_spare()

    def _start_spare(self) -> None:
        """Start a child into the idle list, unless the pool is full."""
        with self._lock:
            if self._size() >= self._max_workers:
                return
            self._starting += 1
            generation = self._generation
        worker = None
        try:
            worker = _Worker(generation)
        except OSError as error:
            raise RiseGymError(f"cannot start a math-verify worker: {error}") from error
        finally:
            with self._lock:
                self._starting -= 1
                current = generation == self._generation
                if worker is not None and current:
                    self._idle.append(worker)
                self._lock.notify_all()
        if not current:
            worker.kill()

    def _size(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _remember(self, gold: str) -> None:
        with self._lock:
            self._parsing_golds[gold] = None
            self._parsing_golds.move_to_end(gold)
            if len(self._parsing_golds) > KNOWN_GOLDS:
                self._parsing_golds.popitem(last=False)


class _Worker:
    """One child process and the bytes read from it but not yet consumed."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
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
