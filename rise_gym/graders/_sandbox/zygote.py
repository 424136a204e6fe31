"""The sandbox zygote: a long-lived process that forks one fresh child per program.

`worker.py` starts it once per pool slot, inside new network, PID and mount namespaces
where the OS allows, as a plain script (standard library only: nothing of rise_gym is
imported, so the process stays small and ``fork`` stays about a millisecond). It speaks
frames on stdin/stdout, each a 4-byte big-endian length followed by UTF-8 JSON::

    parent -> {"uid": int | None, "isolate_fs": bool}                   once, at start
    zygote -> {"pid_one": bool, "isolated_fs": bool, "interfaces": [...]}
    parent -> {"program": str, "timeout": float, "limits": {...}}       per job
    zygote -> {"started": true}                      the child is forked: the job runs
    parent -> {"tests": str, "nonce": str}      read only after the fork, never in the child
    zygote -> {"report", "exit_code", "signal", "timed_out", "stdout", "stderr",
               "truncated", "elapsed", "retire"}

Per job the zygote gives the child a fresh scratch space (`filesystem.py`), forks it
(see `harness.py`), hands it the tests once it says the program ran and the nonce once
it says every test ran, enforces the wall clock, then kills and reaps every process the
program left behind: as PID 1 of its own PID namespace with ``kill(-1, SIGKILL)``;
without a namespace, as a child subreaper that sweeps its descendants in ``/proc``.
``retire`` asks the parent to replace this zygote (a job's scratch space could not be
removed); the verdict still stands.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
REPORT_LIMIT = 16_384
POLL_SECONDS = 0.002
"""How often the child is polled for exit where pidfd_open is missing (Linux < 5.3)."""
HARNESS_CRASHED = 121
"""Exit code of a child whose harness itself failed before it could report."""


@dataclass(frozen=True)
class Setup:
    """What every job of this zygote shares.

    Attributes:
        uid: The unprivileged uid (and gid) programs run as, or None to keep ours.
        files: Each job's scratch space (`filesystem.PrivateRoot` or `HostFolder`).
        pid_one: Whether we are PID 1 of our own PID namespace.
        run_child: `harness.run`, which the forked child calls.
    """

    uid: int | None
    files: Any
    pid_one: bool
    run_child: Callable[[dict[str, Any], str, int | None], NoReturn]


def main() -> None:
    """Serve jobs from stdin until it closes."""
    config = read_frame(0)
    if config is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries cannot raise privileges
    pid_one = os.getpid() == 1
    if not pid_one:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come back to us
    harness, filesystem = _load_sibling("harness"), _load_sibling("filesystem")
    isolated_fs = pid_one and config["isolate_fs"]
    files = filesystem.PrivateRoot() if isolated_fs else filesystem.HostFolder()
    interfaces = [name for _, name in socket.if_nameindex()]
    setup = Setup(config["uid"], files, pid_one, harness.run)
    write_frame(1, {"pid_one": pid_one, "isolated_fs": isolated_fs, "interfaces": interfaces})
    try:
        while (job := read_frame(0)) is not None:
            reply = run_job(job, setup)
            write_frame(1, reply)
            if reply["retire"]:
                break
    finally:
        files.close()


def run_job(job: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """Fork a child for one program, supervise it and clean up after it."""
    limits = job["limits"]
    workdir = setup.files.open_job(limits["disk_bytes"], limits["inodes"], setup.uid)
    (out_r, out_w), (err_r, err_w), (rep_r, rep_w), (tests_r, tests_w) = (
        os.pipe() for _ in range(4)
    )
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        fds = (out_w, err_w, rep_w, tests_r)
        _become_child(lambda: setup.run_child(job, workdir, setup.uid), fds)
    for fd in (out_w, err_w, rep_w, tests_r):
        os.close(fd)
    write_frame(1, {"started": True})
    secret = read_frame(0)  # the tests and the nonce: read now, so the child never held them
    captures = {
        out_r: Capture(limits["output_bytes"]),
        err_r: Capture(limits["output_bytes"]),
        rep_r: Capture(REPORT_LIMIT),
    }
    try:
        tests = secret["tests"].encode()
        sends = [
            (b"ready\n", len(tests).to_bytes(4, "big") + tests),
            (b"done\n", secret["nonce"].encode()),
        ]
        status = _supervise(pid, started + job["timeout"], captures, tests_w, sends)
        timed_out = status is None
        if status is None:
            _kill(pid)
            status = os.waitpid(pid, 0)[1]
        _kill_all(setup.pid_one)
        for fd, capture in captures.items():
            capture.drain(fd)
    finally:
        for fd in captures:
            os.close(fd)
        retire = not setup.files.close_job()
    out, err, report = (captures[fd] for fd in (out_r, err_r, rep_r))
    return {
        "report": report.text(),
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.truncated or err.truncated,
        "elapsed": time.monotonic() - started,
        "retire": retire,
    }


class Capture:
    """Bytes read from one pipe, kept up to a cap; the rest is read and dropped."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.truncated = False
        self.open = True

    def read_from(self, fd: int) -> None:
        """Read what is available; mark the pipe closed at end of file."""
        chunk = os.read(fd, 65_536)
        if not chunk:
            self.open = False
        room = self.limit - len(self.data)
        self.data += chunk[:room]
        self.truncated |= len(chunk) > room

    def drain(self, fd: int) -> None:
        """Read to end of file once every writer is dead (bounded, in case one is not)."""
        deadline = time.monotonic() + 1.0
        while self.open and select.select([fd], [], [], deadline - time.monotonic())[0]:
            self.read_from(fd)

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced)."""
        return self.data.decode("utf-8", errors="replace")


def _supervise(
    pid: int,
    deadline: float,
    captures: dict[int, Capture],
    tests_w: int,
    sends: list[tuple[bytes, bytes]],
) -> int | None:
    """Pump the child's pipes until it exits (its wait status) or the deadline (None).

    Each ``(line, payload)`` of ``sends`` goes down ``tests_w`` once the report pipe (the
    last capture) shows ``line`` after the previous one: the tests after ``ready``, the
    nonce after ``done``.
    """
    os.set_blocking(tests_w, False)
    report = list(captures.values())[-1]
    pending, seen = b"", 0  # bytes not yet written; where the next line is looked for
    pidfd = _pidfd_open(pid)  # readable when the child exits; None: poll instead
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            readers = [fd for fd, capture in captures.items() if capture.open]
            writers = [tests_w] if pending else []
            if pidfd is None:
                remaining = min(remaining, POLL_SECONDS)
            else:
                readers.append(pidfd)
            readable, writable, _ = select.select(readers, writers, [], remaining)
            if pidfd in readable or pidfd is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status
            for fd in readable:
                if fd != pidfd:
                    captures[fd].read_from(fd)
            if sends and (found := report.data.find(sends[0][0], seen)) >= 0:
                seen = found + len(sends[0][0])
                pending += sends.pop(0)[1]
            if writable and pending:
                try:
                    pending = pending[os.write(tests_w, pending) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    pending, sends = b"", []
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)
        os.close(tests_w)


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux before 5.3
        return None


def _become_child(run: Callable[[], NoReturn], fds: tuple[int, int, int, int]) -> NoReturn:
    """In the forked child: own session, fds 0-4 set up, everything else closed, then run."""
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (devnull, *fds)]
        for target, fd in enumerate(high):  # 0 stdin, 1 stdout, 2 stderr, 3 report, 4 tests
            os.dup2(fd, target)
        os.closerange(5, os.sysconf("SC_OPEN_MAX"))
        run()
    finally:
        os._exit(HARNESS_CRASHED)


def _kill(pid: int) -> None:
    for target in (-pid, pid):  # its process group, then itself
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_all(pid_one: bool) -> None:
    """Kill and reap every remaining descendant, including ones that left the group."""
    while True:
        if pid_one:  # PID 1 of a PID namespace: -1 means every other process in it
            _signal_everyone()
        else:
            for pid in descendants(os.getpid()):
                _kill(pid)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _signal_everyone() -> None:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(root: int) -> list[int]:
    """Every descendant of ``root``, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def _load_sibling(name: str) -> Any:
    """Load ``name``.py from beside this file (we run as a script, not from a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("rise_sandbox_" + name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _encode(message: Any) -> bytes:
    return json.dumps(message).encode()


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """Read one frame; None at a clean end of file.

    Raises:
        TimeoutError: ``deadline`` (a `time.monotonic` value) passed first.
        EOFError: The stream ended inside a frame.
    """
    header = _read_exact(fd, 4, deadline)
    if header is None:
        return None
    body = _read_exact(fd, int.from_bytes(header, "big"), deadline)
    if body is None:
        raise EOFError("the stream ended inside a frame")
    return json.loads(body)


def write_frame(fd: int, message: Any) -> None:
    """Write one frame (blocking until all of it is written)."""
    body = _encode(message)
    view = memoryview(len(body).to_bytes(4, "big") + body)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer from the sandbox worker in time")
        chunk = os.read(fd, min(size - len(data), 1 << 20))
        if not chunk:
            if data:
                raise EOFError("the stream ended inside a frame")
            return None
        data += chunk
    return bytes(data)


if __name__ == "__main__":
    main()
