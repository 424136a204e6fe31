"""The child side of the sandbox: limits, the program, then the tests, then the pass token.

Runs in the process the zygote forks for one program, with fds 0 (/dev/null), 1 and 2
(capped pipes), 3 (the report pipe) and 4 (the tests pipe). The order is what the
pass proof rests on:

1. resource limits, a fresh work directory, an unprivileged uid where we are root;
2. the program runs (its top-level code) with neither the tests nor the nonce anywhere
   in this process's memory;
3. the harness writes ``ready`` and only then receives the tests and the nonce;
4. the tests run in the program's namespace, with a pristine copy of the builtins
   (so patching ``builtins.abs`` or ``__builtins__`` in the program does not reach them);
5. only when every test ran does the harness write ``passed <nonce>``.

A failure is reported as one JSON line ``{"status", "feedback"}``; the parent trusts it
only to describe a failure, never as a pass.
"""

from __future__ import annotations

import builtins
import ctypes
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
FEEDBACK_LIMIT = 2_000
PR_SET_KEEPCAPS = 8
CAP_DAC_READ_SEARCH = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Bound now, so a program that patches these modules cannot change what the harness calls.
_write, _read, _exit, _getpid = os.write, os.read, os._exit, os.getpid
_dumps, _loads = json.dumps, json.loads
_extract_tb, _format_only = traceback.extract_tb, traceback.format_exception_only


def run(job: dict[str, Any], workdir: str, uid: int | None) -> NoReturn:
    """Run ``job["program"]`` then the tests the zygote sends, and report; never returns."""
    me = _getpid()
    _set_limits(job["limits"], job["timeout"])
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    if uid is not None:
        _drop_privileges(uid)
    program = job["program"]
    pristine = dict(builtins.__dict__)
    namespace: dict[str, Any] = {"__name__": "solution", "__builtins__": builtins}
    try:
        code = compile(program, "<program>", "exec")
    except BaseException as error:  # SyntaxError, null bytes, MemoryError on huge input
        _fail("compile", error, program, "")
    try:
        exec(code, namespace)
    except BaseException as error:  # SystemExit too: exiting is not passing
        _stop_if_copy(me)
        _fail("program", error, program, "")
    _stop_if_copy(me)
    _write(REPORT_FD, b"ready\n")
    secret = _loads(_read_all(TESTS_FD))
    tests = secret["tests"]
    namespace["__builtins__"] = dict(pristine)
    try:
        exec(compile(tests, "<tests>", "exec"), namespace)
    except BaseException as error:
        _stop_if_copy(me)
        _fail("tests", error, program, tests)
    _stop_if_copy(me)
    _flush()
    _write(REPORT_FD, f"passed {secret['nonce']}\n".encode())
    _exit(0)


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


def _drop_privileges(uid: int) -> None:
    """Become ``uid`` (no groups), keeping only CAP_DAC_READ_SEARCH.

    That one capability lets the program read and traverse any file, so an interpreter
    installed under a private home (e.g. /root/.pyenv) still imports; it grants no
    write, kill or network right. It does not survive an ``exec`` by the program.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2 words
    data[0] = data[1] = 1 << CAP_DAC_READ_SEARCH
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH) failed")


def _stop_if_copy(me: int) -> None:
    """A process the program forked returns here too; it must not act as the harness."""
    if _getpid() != me:
        _exit(0)


def _fail(phase: str, error: BaseException, program: str, tests: str) -> NoReturn:
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


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := _read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _flush() -> None:
    """Push the program's buffered output into the pipes before the process ends."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()  # type: ignore[union-attr]
        except BaseException:
            pass
