"""Grade programs against unit tests in an isolated, killable sandbox.

Each program runs in a fresh child process forked by a long-lived "zygote" worker that
was started once inside new network, PID and mount namespaces (``unshare``). The zygote
replaces its root file system with a private one: read-only bind mounts of the system
folders and of the Python installation (its prefixes and every ``sys.path`` folder, so
site-packages import wherever they live, under /tmp included), a private /proc and a
few devices; no home, /run, /var or host /tmp. Each program gets a fresh tmpfs on /tmp
(``max_disk_mb``, 16,384 inodes), unmounted after it, whatever it left there. It runs
as a fresh unprivileged uid with no capability, with resource limits (CPU seconds,
address space, processes, file size, open files), stdin from /dev/null, capped
stdout/stderr and a scrubbed environment. A wall clock kills the child and every
process it left behind (``setsid`` ones included: the zygote is PID 1 of its namespace).
A pass is proven only by a per-run random nonce that the harness receives and prints
after every test ran, never by exit code 0. A program's misbehaviour is always its own
verdict; `SandboxError` means the sandbox itself failed (a worker found dead between
jobs is replaced and the job run).

What the isolation does not cover (honestly stated):

- The program and its tests share one Python interpreter, as they must (the tests call
  the program's functions). The harness's audit hook, installed before the program
  runs, refuses new audit hooks and every Python route to a frame or to the list of
  live objects (``sys._getframe``, ``inspect``, traceback, generator and coroutine
  frames, ``gc.get_objects``/referrers/referents, trace and profile functions,
  ``sys._current_frames``), and the nonce enters the process only after the last test,
  so neither the tests' frames nor the harness's hold it while program code runs. A
  program written against the harness itself can still forge a pass: by speaking its
  protocol on the harness's pipes (fds 3 and 4), or by reading or writing the process's
  memory (``ctypes``, /proc/self/mem). Programs that introspect frames get a
  ValueError; the standard library that only names its caller (namedtuple, enum,
  typing, logging) works on.
- Assertions have Python semantics: an object whose ``__eq__`` always returns True
  passes ``assert f(x) == y``. Tests that must rule this out check types explicitly.
- Modules the program patches (``math``, ``re``, ...) stay patched for the tests.
- Programs can read what the system folders and the Python installation let any user
  read, and connect to a Unix socket only if one lies inside those read-only folders.
- Without root, the namespaces sit in a user namespace where we are root
  (``--map-root-user``): programs keep your uid there but no capability, and see none
  of your files but the read-only folders above. With ``isolation="none"`` (no
  namespaces) programs work in a folder under the host's temporary folder, can read
  and write what their uid can (world-writable folders included), reach the network (a
  warning says so) and signal your other processes; the process limit counts all the
  processes of that uid; as root they run as a throw-away uid without capabilities,
  so an interpreter other users cannot read (e.g. under /root) cannot import modules
  the zygote had not loaded.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import secrets
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, cast

from rise_gym.errors import SandboxError
from rise_gym.graders._sandbox.worker import Isolation, Limits, Worker, WorkerLost

CodeStatus = Literal["passed", "failed", "timeout", "memory", "runtime_error", "syntax_error"]
"""How a graded program ended."""

DEFAULT_TIMEOUT = 5.0
"""Wall-clock seconds allowed for a program and its tests together."""
MAX_TIMEOUT = 3600.0
"""The longest timeout accepted (an hour)."""
INODES = 16_384
"""Files and folders a program may create in its scratch /tmp."""

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "CodePool", "CodeResult", "CodeStatus", "grade_code"]


@dataclass(frozen=True)
class CodeResult:
    """The outcome of running one program against its tests.

    Attributes:
        passed: True only if the harness printed this run's nonce after every test ran.
        status: ``passed``, ``failed`` (an assertion failed), ``timeout``, ``memory``,
            ``runtime_error`` (an exception, a crash or an early exit) or ``syntax_error``.
        feedback: The first failing test line and the error (truncated), empty on a pass.
        stdout: What the program printed (up to the pool's ``max_output_bytes``).
        stderr: What the program wrote to stderr (same cap).
        output_truncated: Whether stdout or stderr went past the cap.
        elapsed: Seconds from fork to the end of the run.
        network_isolated: Whether the program ran without network access.
    """

    passed: bool
    status: CodeStatus
    feedback: str
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    elapsed: float = 0.0
    network_isolated: bool = True


def grade_code(program: str, tests: str, *, timeout: float = DEFAULT_TIMEOUT) -> CodeResult:
    r"""Run ``program`` then ``tests`` (asserts, in the program's namespace) in the sandbox.

    Uses a process-wide `CodePool` with one worker per CPU core, started on first use.

    Example:
        >>> grade_code("def add(a, b):\n    return a + b", "assert add(2, 3) == 5").status
        'passed'

    Args:
        program: Python source of the program under test.
        tests: Python source run after the program in the same namespace.
        timeout: Wall-clock seconds for the program and its tests together.

    Returns:
        The verdict, with the first failure as feedback.

    Raises:
        TypeError: ``program`` or ``tests`` is not a str, or ``timeout`` not a number.
        ValueError: ``tests`` is not valid Python (a broken problem, not a wrong program),
            or ``timeout`` is not in (0, `MAX_TIMEOUT`] (NaN and infinity included).
        SandboxError: The sandbox itself failed; the program was neither passed nor failed.
    """
    return _default_pool().grade(program, tests, timeout=timeout)


class CodePool:
    """Sandbox workers grading programs in parallel, one program per worker at a time.

    Workers start on first need and are reused; each runs a fresh child per program.

    Example:
        >>> with CodePool(workers=2) as pool:
        ...     results = pool.grade_many([("x = 1", "assert x == 1"), ("x = 2", "assert x == 1")])
        >>> [result.status for result in results]
        ['passed', 'failed']
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        isolation: Isolation = "auto",
        memory_limit_mb: int = 1024,
        max_processes: int = 32,
        max_file_size_mb: int = 16,
        max_disk_mb: int = 64,
        max_open_files: int = 128,
        max_output_bytes: int = 65_536,
    ):
        """Configure the pool (no process starts until the first grading).

        Args:
            workers: Programs graded at once; defaults to the number of usable cores.
            isolation: ``"auto"`` (namespaces when the OS allows, else none with a
                warning), ``"namespaces"`` (fail with `SandboxError` without them) or
                ``"none"``.
            memory_limit_mb: Address-space limit of each program.
            max_processes: Process limit of each program's uid (stops fork bombs).
            max_file_size_mb: Largest file a program may write.
            max_disk_mb: All a program may write (its scratch /tmp; with namespaces).
            max_open_files: Open file descriptors per program process.
            max_output_bytes: Stdout and stderr kept per program (the rest is dropped).
        """
        self.workers = workers or len(os.sched_getaffinity(0))
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.isolation: Isolation = isolation
        self.limits = Limits(
            memory_bytes=memory_limit_mb * 2**20,
            processes=max_processes,
            file_size_bytes=max_file_size_mb * 2**20,
            open_files=max_open_files,
            output_bytes=max_output_bytes,
            disk_bytes=max_disk_mb * 2**20,
            inodes=INODES,
        )
        self._idle: list[Worker] = []
        self._started = 0
        self._closed = False
        self._lock = threading.Condition()

    def grade(self, program: str, tests: str, *, timeout: float = DEFAULT_TIMEOUT) -> CodeResult:
        """Grade one program; see `grade_code` for the arguments and errors."""
        _check_job(program, tests, timeout)
        nonce = secrets.token_hex(16)
        try:
            raw, network = self._run(program, tests, nonce, timeout)
        except WorkerLost:  # killed while idle: the job never started, a fresh worker runs it
            raw, network = self._run(program, tests, nonce, timeout)
        return _verdict(raw, nonce, timeout, network)

    def grade_many(
        self, jobs: Sequence[tuple[str, str]], *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[CodeResult]:
        """Grade ``(program, tests)`` pairs in parallel; results come back in order.

        Every job is checked (`grade_code`'s TypeError and ValueError) before any runs.
        """
        for program, tests in jobs:
            _check_job(program, tests, timeout)
        with ThreadPoolExecutor(max_workers=self.workers) as executor:
            futures = [executor.submit(self.grade, p, t, timeout=timeout) for p, t in jobs]
            return [future.result() for future in futures]

    def close(self) -> None:
        """Stop every idle worker; busy ones stop when their program ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.close()

    def __enter__(self) -> CodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, program: str, tests: str, nonce: str, timeout: float) -> tuple[Any, bool]:
        """One attempt on one worker: the zygote's raw reply and the network isolation."""
        worker = self._acquire()
        try:
            return worker.run(program, tests, nonce, timeout, self.limits), worker.network_isolated
        finally:
            self._release(worker)

    def _acquire(self) -> Worker:
        with self._lock:
            while not self._idle and self._started >= self.workers and not self._closed:
                self._lock.wait()
            if self._closed:
                raise SandboxError("this CodePool is closed; create a new one")
            idle = self._idle.pop() if self._idle else None
            if idle is None:
                self._started += 1
        if idle is not None:
            if idle.alive:
                return idle
            idle.close()  # died while idle (killed from outside): a fresh one takes its slot
        try:
            return Worker(self.isolation)
        except BaseException:
            self._forget()
            raise

    def _release(self, worker: Worker) -> None:
        with self._lock:
            keep = worker.reusable and worker.alive and not self._closed
            if keep:
                self._idle.append(worker)
                self._lock.notify()
        if not keep:
            worker.close()
            self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._started -= 1
            self._lock.notify()


def check_timeout(timeout: float) -> None:
    """Refuse a timeout that is not a number of seconds in (0, `MAX_TIMEOUT`].

    Raises:
        TypeError: ``timeout`` is not a number (a bool is not).
        ValueError: It is NaN, infinite, not positive or above `MAX_TIMEOUT`.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise ValueError(
            f"timeout must be > 0 seconds and at most {MAX_TIMEOUT:g}, got {timeout!r}"
        )


def _check_job(program: str, tests: str, timeout: float) -> None:
    """Refuse a job that could never be graded, before any worker is touched."""
    for name, value in (("program", program), ("tests", tests)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    check_timeout(timeout)
    try:
        compile(tests, "<tests>", "exec")
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"the tests are not valid Python: {error}") from error


def _verdict(raw: dict[str, Any], nonce: str, timeout: float, network: bool) -> CodeResult:
    """Turn the zygote's raw reply into a result: only the nonce proves a pass."""
    lines = raw["report"].splitlines()
    status: CodeStatus
    if f"passed {nonce}" in lines:
        status, feedback = "passed", ""
    elif record := _last_record(lines):
        status, feedback = cast(CodeStatus, record["status"]), record["feedback"]
    elif raw["timed_out"]:
        status, feedback = "timeout", f"The program ran past the {timeout:g} s time limit."
    elif raw["signal"] == signal.SIGXCPU:
        status, feedback = "timeout", "The program ran past its CPU time limit."
    elif raw["signal"] is not None:
        name = signal.Signals(raw["signal"]).name
        status, feedback = "runtime_error", f"The program was killed by {name}."
    else:
        status = "runtime_error"
        feedback = (
            f"The program ended its process (exit code {raw['exit_code']}) "
            "before the tests finished."
        )
    return CodeResult(
        passed=status == "passed",
        status=status,
        feedback=feedback,
        stdout=raw["stdout"],
        stderr=raw["stderr"],
        output_truncated=raw["truncated"],
        elapsed=raw["elapsed"],
        network_isolated=network,
    )


def _last_record(lines: list[str]) -> dict[str, str] | None:
    """The harness's last failure record (anything malformed is ignored)."""
    statuses = {"failed", "memory", "runtime_error", "syntax_error"}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("status") in statuses
            and isinstance(record.get("feedback"), str)
        ):
            return record
    return None


_default: tuple[int, CodePool] | None = None
_default_lock = threading.Lock()


def _default_pool() -> CodePool:
    """The process-wide pool (a fresh one after a fork: pipes are not shareable)."""
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            _default = (os.getpid(), CodePool())
        return _default[1]


@atexit.register
def _close_default_pool() -> None:
    if _default is not None and _default[0] == os.getpid():
        _default[1].close()
