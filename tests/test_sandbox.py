"""The code sandbox: verdicts, hostile programs, the pool, HumanEval canonical solutions."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rise_gym import SandboxError
from rise_gym.envs.code import load_code_problems
from rise_gym.graders import CodeResult, grade_code
from rise_gym.graders._sandbox.zygote import descendants
from rise_gym.graders.code import CodePool

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
OUTPUT_CAP = 4_096


@pytest.fixture(scope="module")
def pool():
    with CodePool(workers=2, max_output_bytes=OUTPUT_CAP) as pool:
        pool.grade_many([("", "pass")] * 2)  # start both workers
        yield pool


@pytest.fixture(scope="module")
def canaries():
    """Files a program must not be able to delete: one on the shared /var/tmp, one in /tmp."""
    folders = [Path(tempfile.mkdtemp(dir="/var/tmp")), Path(tempfile.mkdtemp())]
    files = []
    for folder in folders:
        folder.chmod(0o755)
        (folder / "canary.txt").write_text("still here")
        files.append(folder / "canary.txt")
    yield files
    for folder in folders:
        (folder / "canary.txt").unlink(missing_ok=True)
        folder.rmdir()


def sandbox_processes(pool: CodePool) -> list[int]:
    """Processes anywhere on the machine running as one of the pool's sandbox uids."""
    uids = {str(worker.uid) for worker in pool._idle if worker.uid is not None}
    found = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if uid_line.split()[1] in uids:
            found.append(int(entry))
    return found


# ---- verdicts -------------------------------------------------------------------------


def test_grade_code_passes_a_correct_program():
    result = grade_code("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5")
    assert isinstance(result, CodeResult)
    assert (result.passed, result.status, result.feedback) == (True, "passed", "")


def test_failing_assertion_names_the_test_line(pool):
    tests = "assert add(1, 1) == 2\nassert add(2, 3) == 5, 'add(2, 3)'\n"
    result = pool.grade("def add(a, b):\n    return 2\n", tests)
    assert (result.passed, result.status) == (False, "failed")
    assert "line 2" in result.feedback and "assert add(2, 3) == 5" in result.feedback
    assert "AssertionError: add(2, 3)" in result.feedback


def test_error_raised_inside_the_program_names_both_lines(pool):
    result = pool.grade("def f(x):\n    return x[5]\n", "assert f([1]) == 1")
    assert result.status == "runtime_error"
    assert "assert f([1]) == 1" in result.feedback and "return x[5]" in result.feedback
    assert "IndexError" in result.feedback


def test_syntax_error_and_output_are_reported(pool):
    result = pool.grade("print('hello')\ndef f(:\n", "pass")
    assert result.status == "syntax_error" and "SyntaxError" in result.feedback
    result = pool.grade("print('hello')\nimport sys\nprint('oops', file=sys.stderr)", "pass")
    assert (result.status, result.stdout, result.stderr) == ("passed", "hello\n", "oops\n")


def test_feedback_is_truncated(pool):
    result = pool.grade("x = 1", "assert x == 2, 'y' * 100_000")
    assert result.status == "failed" and len(result.feedback) < 2_100


def test_invalid_tests_are_a_value_error_not_a_verdict(pool):
    with pytest.raises(ValueError, match="tests are not valid Python"):
        pool.grade("x = 1", "assert x ==")


def test_patched_builtins_do_not_reach_the_tests(pool):
    program = "import builtins\nbuiltins.abs = lambda x: 0\ndef f(x):\n    return 100\n"
    assert pool.grade(program, "assert abs(f(1) - 2) < 1e-6").status == "failed"


def test_programs_have_no_network_and_a_private_tmp(pool):
    program = "import os, socket\ninterfaces = [n for _, n in socket.if_nameindex()]\n"
    result = pool.grade(
        program, "assert interfaces == ['lo']\nassert os.getcwd().startswith('/tmp/')"
    )
    assert result.passed and result.network_isolated


# ---- hostile programs -----------------------------------------------------------------

ALWAYS_EQUAL = "class AlwaysEqual:\n    def __eq__(self, other):\n        {body}\n"
HOSTILE = {
    # name: (program, tests, acceptable statuses, timeout)
    "infinite_loop": ("while True:\n    pass\n", "pass", {"timeout"}, 1.0),
    "catch_all_ignore_alarm": (
        "import signal\nfor name in ('SIGALRM', 'SIGTERM', 'SIGXCPU', 'SIGINT'):\n"
        "    signal.signal(getattr(signal, name), signal.SIG_IGN)\nsignal.alarm(1)\n"
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass\n",
        "pass",
        {"timeout"},
        1.0,
    ),
    "fork_bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "pass",
        {"timeout"},
        1.0,
    ),
    "setsid_children_sleep": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(1000)\n    time.sleep(1000)\ndef f():\n    return 1\n",
        "assert f() == 1",
        {"passed"},
        5.0,
    ),
    "unbounded_printing": ("while True:\n    print('x' * 1000)\n", "pass", {"timeout"}, 1.0),
    "close_stdout_then_loop": (
        "import os\nos.close(1)\nos.close(2)\nwhile True:\n    pass\n",
        "pass",
        {"timeout"},
        1.0,
    ),
    "input": ("name = input()\n", "pass", {"runtime_error"}, 5.0),
    "sys_exit_before_tests": (
        "import sys\nsys.exit(0)\n",
        "assert f() == 1",
        {"runtime_error"},
        5.0,
    ),
    "os_exit_before_tests": ("import os\nos._exit(0)\n", "assert f() == 1", {"runtime_error"}, 5.0),
    "exit_before_tests": ("exit()\n", "assert f() == 1", {"runtime_error"}, 5.0),
    "os_exit_inside_tests": (
        "import os\ndef f():\n    os._exit(0)\n",
        "assert f() == 1",
        {"runtime_error"},
        5.0,
    ),
    # Python semantics, not a sandbox escape: documented in rise_gym.graders.code.
    "always_equal_object": (
        ALWAYS_EQUAL.format(body="return True") + "def f(x):\n    return AlwaysEqual()\n",
        "assert f(1) == 2",
        {"passed"},
        5.0,
    ),
    "always_equal_object_that_exits": (
        ALWAYS_EQUAL.format(body="import os; os._exit(0)")
        + "def f(x):\n    return AlwaysEqual()\n",
        "assert f(1) == 2",
        {"runtime_error"},
        5.0,
    ),
    "forged_pass_line": (
        "import os\nfake = b'passed ' + b'0' * 32 + b'\\n'\nos.write(3, b'ready\\n' + fake)\n"
        "print(fake.decode())\nos._exit(0)\n",
        "assert False",
        {"runtime_error"},
        5.0,
    ),
    "allocate_100_gb": ("data = bytearray(100 * 10**9)\n", "pass", {"memory"}, 5.0),
    "open_socket": (
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n",
        "pass",
        {"runtime_error"},
        5.0,
    ),
    "os_system_rm": (
        "import os\nos.system('rm -rf {canary_dir} {canary}')\n",
        "pass",
        {"passed"},
        5.0,
    ),
    "subprocess_rm": (
        "import subprocess\nsubprocess.run(['rm', '-rf', '{canary_dir}', '{canary}'])\n",
        "pass",
        {"passed"},
        5.0,
    ),
    "remove_file": ("import os\nos.remove('{canary}')\n", "pass", {"runtime_error"}, 5.0),
    "rmtree_outside_workdir": (
        "import shutil\nshutil.rmtree('{canary_dir}')\n",
        "pass",
        {"runtime_error"},
        5.0,
    ),
    "kill_every_process": (
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
        "pass",
        {"runtime_error"},
        5.0,
    ),
    "ctypes_segfault": ("import ctypes\nctypes.string_at(0)\n", "pass", {"runtime_error"}, 5.0),
    "infinite_recursion": ("def f():\n    return f()\nf()\n", "pass", {"runtime_error"}, 5.0),
    "unlimited_recursion": (
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)\n",
        "pass",
        {"runtime_error", "memory", "timeout"},
        2.0,
    ),
    "huge_file": (
        "with open('big', 'wb') as handle:\n    handle.write(b'0' * (64 * 2**20))\n",
        "pass",
        {"runtime_error"},
        5.0,
    ),
    "ten_mb_of_code": (
        "blob = '" + "a" * 10_000_000 + "'\ndef f():\n    return len(blob)\n",
        "assert f() == 10_000_000",
        {"passed"},
        10.0,
    ),
    "non_utf8_output": (
        "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80 not utf-8\\n')\n"
        "def f():\n    return 1\n",
        "assert f() == 1",
        {"passed"},
        5.0,
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name, pool, canaries):
    program, tests, statuses, timeout = HOSTILE[name]
    program = program.replace("{canary}", str(canaries[0])).replace(
        "{canary_dir}", str(canaries[0].parent)
    )
    before = set(descendants(os.getpid()))
    started = time.monotonic()
    result = pool.grade(program, tests, timeout=timeout)
    assert result.status in statuses, result.feedback
    assert not result.passed or statuses == {"passed"}
    assert time.monotonic() - started < timeout + 5
    # no process survives, inside our process tree or anywhere under the sandbox uids
    assert set(descendants(os.getpid())) == before
    assert sandbox_processes(pool) == []
    assert all(canary.read_text() == "still here" for canary in canaries)
    # the machine and the pool still answer promptly
    started = time.monotonic()
    assert pool.grade("x = 1", "assert x == 1").passed
    assert time.monotonic() - started < 2


def test_hostile_outcomes_carry_the_evidence(pool):
    printing = pool.grade(*HOSTILE["unbounded_printing"][:2], timeout=1.0)
    assert printing.output_truncated and len(printing.stdout) <= OUTPUT_CAP
    assert "\ufffd" in pool.grade(*HOSTILE["non_utf8_output"][:2]).stdout
    assert "SIGSEGV" in pool.grade(*HOSTILE["ctypes_segfault"][:2]).feedback
    assert "exit(0)" in pool.grade(*HOSTILE["sys_exit_before_tests"][:2]).feedback
    assert "unreachable" in pool.grade(*HOSTILE["open_socket"][:2]).feedback
    assert "EOFError" in pool.grade(*HOSTILE["input"][:2]).feedback
    assert "RecursionError" in pool.grade(*HOSTILE["infinite_recursion"][:2]).feedback


# ---- the pool -------------------------------------------------------------------------


def test_64_concurrent_gradings_return_the_process_table_to_baseline(pool):
    before = set(descendants(os.getpid()))
    kinds = {
        "passed": ("def f():\n    return 1\n", "assert f() == 1"),
        "failed": ("def f():\n    return 2\n", "assert f() == 1"),
        "syntax_error": ("def f(:\n", "pass"),
        "runtime_error": ("raise ValueError('no')\n", "pass"),
    }
    sleeper = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    jobs, expected = [], []
    for index in range(64):
        status = list(kinds)[index % 4]
        program, tests = kinds[status]
        jobs.append((sleeper + program if index % 3 == 0 else program, tests))
        expected.append(status)
    jobs[7], expected[7] = ("while True:\n    pass\n", "pass"), "timeout"
    results = pool.grade_many(jobs, timeout=1.5)
    assert [result.status for result in results] == expected
    assert set(descendants(os.getpid())) == before
    assert sandbox_processes(pool) == []


def test_closed_pool_leaves_no_process():
    before = set(descendants(os.getpid()))
    with CodePool(workers=2) as pool:
        assert all(r.passed for r in pool.grade_many([("x = 1", "assert x == 1")] * 4))
        assert len(set(descendants(os.getpid())) - before) >= 2
    assert set(descendants(os.getpid())) == before
    with pytest.raises(SandboxError, match="closed"):
        pool.grade("x = 1", "pass")


def test_a_dead_worker_is_a_sandbox_error_and_is_replaced():
    with CodePool(workers=1) as pool:
        pool.grade("", "pass")
        worker = pool._idle[0]
        killer = threading.Timer(0.5, os.killpg, (worker.process.pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(SandboxError, match="worker"):
            pool.grade("import time\ntime.sleep(30)\n", "pass", timeout=20)
        killer.join()
        assert pool.grade("x = 1", "assert x == 1").passed


def test_without_namespaces_descendants_are_still_killed_and_a_warning_says_so():
    before = set(descendants(os.getpid()))
    with pytest.warns(RuntimeWarning, match="without network isolation"):
        pool = CodePool(workers=1, isolation="none")
        pool.grade("", "pass")
    with pool:
        program, tests, _, _ = HOSTILE["setsid_children_sleep"]
        result = pool.grade(program, tests)
        assert result.passed and not result.network_isolated
        assert pool.grade(*HOSTILE["fork_bomb"][:2], timeout=1.0).status == "timeout"
        assert len(set(descendants(os.getpid())) - before) == 1  # the zygote alone
        assert sandbox_processes(pool) == []
    assert set(descendants(os.getpid())) == before


def test_without_unshare_namespaces_mode_fails_and_auto_mode_falls_back(monkeypatch):
    monkeypatch.setattr("rise_gym.graders._sandbox.worker.shutil.which", lambda name: None)
    with CodePool(workers=1, isolation="namespaces") as pool:
        with pytest.raises(SandboxError, match="unshare.*isolation='none'"):
            pool.grade("x = 1", "pass")
    with CodePool(workers=1) as pool, pytest.warns(RuntimeWarning, match="network isolation"):
        assert not pool.grade("x = 1", "assert x == 1").network_isolated


def test_polling_replaces_pidfd_on_old_kernels(monkeypatch):
    from rise_gym.graders._sandbox import zygote

    monkeypatch.delattr(zygote.os, "pidfd_open")  # the same module the zygote script uses
    assert zygote._pidfd_open(os.getpid()) is None


# ---- HumanEval ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval():
    return load_code_problems("humaneval")


def test_every_humaneval_canonical_solution_passes(pool, humaneval):
    results = pool.grade_many([(p.solution, p.tests) for p in humaneval])
    failures = {p.id: r.feedback for p, r in zip(humaneval, results) if not r.passed}
    assert len(humaneval) == 164 and failures == {}


def test_every_humaneval_prompt_alone_fails(pool, humaneval):
    results = pool.grade_many([(p.question, p.tests) for p in humaneval])
    assert [p.id for p, r in zip(humaneval, results) if r.passed] == []
    assert {r.status for r in results} <= {"failed", "runtime_error"}


@pytest.mark.xfail(
    strict=True,
    reason="known limit (documented in rise_gym.graders.code): program and tests share one "
    "process, so a program written against this harness can request the tests itself",
)
def test_a_program_targeting_the_harness_pipes_cannot_forge_a_pass(pool):
    program = (
        "import json, os\nos.write(3, b'ready\\n')\ndata = b''\n"
        "while chunk := os.read(4, 65536):\n    data += chunk\n"
        "os.write(3, ('passed ' + json.loads(data)['nonce'] + '\\n').encode())\nos._exit(0)\n"
    )
    assert not pool.grade(program, "assert False").passed
