"""The child side of the sandbox: limits, the program, then the tests, then the pass token.

Runs in the process the zygote forks for one program, with fds 0 (/dev/null), 1 and 2
(capped pipes), 3 (the report pipe) and 4 (the tests, then the nonce). The order is
what the pass proof rests on:

1. resource limits, the job's work directory, every capability dropped for good and
   an unprivileged uid where we are root;
2. the harness's audit hook, the only one the process will have: it refuses new hooks
   and every way Python offers to reach a frame or to list live objects (frames of
   tracebacks, generators and coroutines, ``sys._getframe``, ``sys._current_frames``,
   ``gc.get_objects``/referrers/referents, trace and profile functions), so no code of
   the program can look into the harness's frames;
3. the program runs (its top-level code), then the harness writes ``ready`` and only
   then receives the tests;
4. the tests run in the program's namespace, with a pristine copy of the builtins
   (so patching ``builtins.abs`` or ``__builtins__`` in the program does not reach them);
5. only when every test ran, with signals blocked, tracing off and the garbage
   collector stopped (no program code can run in this thread any more), the harness
   writes ``done``, receives this run's nonce and writes ``passed <nonce>``: the nonce
   is never in this process while code of the program runs in this thread.

A failure is reported as one JSON line ``{"status", "feedback"}``; the parent trusts it
only to describe a failure, never as a pass.
"""

from __future__ import annotations

import _signal
import builtins
import ctypes
import gc
import json
import math
import os
import resource
import sys
import tempfile
import traceback
from typing import Any, NoReturn

REPORT_FD = 3
TESTS_FD = 4
NONCE_BYTES = 32
FEEDBACK_LIMIT = 2_000
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
REFUSED_EVENTS = frozenset(
    {
        "sys.addaudithook",
        "sys._getframe",
        "sys._getframemodulename",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
"""Audit events refused while the program and the tests run."""
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
"""Attributes (audited as ``object.__getattr__``) that hand out a frame."""

# Bound now, so a program that patches these modules cannot change what the harness calls.
_write, _read, _exit, _getpid = os.write, os.read, os._exit, os.getpid
_dumps = json.dumps
_extract_tb, _format_only = traceback.extract_tb, traceback.format_exception_only
_settrace, _setprofile, _gc_disable = sys.settrace, sys.setprofile, gc.disable
_sigmask, _all_signals = _signal.pthread_sigmask, _signal.valid_signals  # C, not signal.py
_refused: frozenset[str] = frozenset()
"""The audit events refused now (none before the program and while reporting a failure)."""


def run(job: dict[str, Any], workdir: str, uid: int | None) -> NoReturn:
    """Run ``job["program"]`` then the tests the zygote sends, and report; never returns."""
    me = _getpid()
    _set_limits(job["limits"], job["timeout"])
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    _drop_privileges(uid)
    program = job["program"]
    pristine = dict(builtins.__dict__)
    namespace: dict[str, Any] = {"__name__": "solution", "__builtins__": builtins}
    try:
        code = compile(program, "<program>", "exec")
    except BaseException as error:  # SyntaxError, null bytes, MemoryError on huge input
        _fail("compile", error, program, "")
    _refuse(REFUSED_EVENTS)
    sys.addaudithook(_audit)
    try:
        exec(code, namespace)
    except BaseException as error:  # SystemExit too: exiting is not passing
        _stop_if_copy(me)
        _fail("program", error, program, "")
    _stop_if_copy(me)
    _write(REPORT_FD, b"ready\n")
    tests = _read_exact(TESTS_FD, int.from_bytes(_read_exact(TESTS_FD, 4), "big")).decode()
    namespace["__builtins__"] = dict(pristine)
    try:
        exec(compile(tests, "<tests>", "exec"), namespace)
    except BaseException as error:
        _stop_if_copy(me)
        _fail("tests", error, program, tests)
    _stop_if_copy(me)
    _flush()
    _sigmask(_signal.SIG_BLOCK, _all_signals())
    _refuse(REFUSED_EVENTS - {"sys.settrace", "sys.setprofile"})
    _settrace(None)
    _setprofile(None)
    _gc_disable()
    _write(REPORT_FD, b"done\n")
    _write(REPORT_FD, b"passed " + _read_exact(TESTS_FD, NONCE_BYTES) + b"\n")
    _exit(0)


def _refuse(events: frozenset[str]) -> None:
    global _refused
    _refused = events


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The harness's audit hook: keeps the program's code out of the harness's frames."""
    if event in _refused or (
        _refused and event == "object.__getattr__" and args[1] in FRAME_ATTRIBUTES
    ):
        # ValueError is what sys._getframe raises past the top of the stack: the standard
        # library (namedtuple, enum, typing, logging) then carries on without a frame.
        raise ValueError(f"{event} is not allowed in the sandbox")


def _set_limits(limits: dict[str, int], timeout: float) -> None:
    cpu_seconds = math.ceil(timeout) + 1  # the wall clock normally fires first
    for limit, soft, hard in (
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),  # SIGXCPU, then SIGKILL
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_NPROC, limits["processes"], limits["processes"]),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"], limits["file_size_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(limit, (soft, hard))


def _drop_privileges(uid: int | None) -> None:
    """Give up every capability for good (bounding and ambient sets too), then ``uid``.

    Becoming ``uid`` (no groups) clears the capabilities by itself; without a uid (in a
    user namespace, or not root) they are cleared explicitly, so the program can never
    read what the files' permissions do not allow it (e.g. /etc/shadow).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(64):  # fails harmlessly past the last one, or without CAP_SETPCAP
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words, all 0
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _stop_if_copy(me: int) -> None:
    """A process the program forked returns here too; it must not act as the harness."""
    if _getpid() != me:
        _exit(0)


def _fail(phase: str, error: BaseException, program: str, tests: str) -> NoReturn:
    _refuse(frozenset())  # the traceback's frames are read below; no nonce comes now
    try:
        record = {"status": _status(phase, error), "feedback": _describe(error, program, tests)}
    except BaseException:  # formatting failed (e.g. out of memory): report the bare type
        record = {"status": "runtime_error", "feedback": type(error).__name__}
    _flush()
    _write(REPORT_FD, _dumps(record).encode() + b"\n")
    _exit(0)


def _status(phase: str, error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "memory"
    if phase == "compile":
        return "syntax_error"
    if isinstance(error, AssertionError):
        return "failed"
    return "runtime_error"


def _describe(error: BaseException, program: str, tests: str) -> str:
    """The failing test line, the program line that raised, and the exception."""
    if isinstance(error, SystemExit):
        message = f"The program called exit({error.code!r}) before the tests finished."
    else:
        message = "".join(_format_only(type(error), error)).strip()
    frames = _extract_tb(error.__traceback__)
    parts = []
    test_frame = _innermost(frames, "<tests>")
    if test_frame is not None:
        parts.append(f"Failed test (line {test_frame}): {_line(tests, test_frame)}")
    program_frame = _innermost(frames, "<program>")
    if program_frame is not None:
        parts.append(f"Raised at program line {program_frame}: {_line(program, program_frame)}")
    parts.append(message)
    feedback = "\n".join(parts)
    if len(feedback) > FEEDBACK_LIMIT:
        feedback = feedback[:FEEDBACK_LIMIT] + " ... [truncated]"
    return feedback


def _innermost(frames: traceback.StackSummary, filename: str) -> int | None:
    for frame in reversed(frames):
        if frame.filename == filename:
            return frame.lineno
    return None


def _line(source: str, number: int | None) -> str:
    lines = source.splitlines()
    return lines[number - 1].strip() if number and 0 < number <= len(lines) else ""


def _read_exact(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := _read(fd, size - len(data))):
        data += chunk
    return data


def _flush() -> None:
    """Push the program's buffered output into the pipes before the process ends."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()  # type: ignore[union-attr]
        except BaseException:
            pass
