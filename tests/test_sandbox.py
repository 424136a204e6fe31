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
        "import os\nos.write(3, b'ready\\n')\nsize = int.from_bytes(os.read(4, 4), 'big')\n"
        "while size > 0:\n    size -= len(os.read(4, size))\n"
        "os.write(3, b'done\\n')\nos.write(3, b'passed ' + os.read(4, 32) + b'\\n')\n"
        "os._exit(0)\n"
    )
    assert not pool.grade(program, "assert False").passed


# ---- hostile programs of issue 14: each class is contained, and its neighbours --------

# Trees a program leaves in its work directory or /tmp: each is the program's business,
# the next job on the same worker must run as usual.
NESTED = "import os\nfor _ in range({depth}):\n    os.mkdir('d')\n    os.chdir('d')\n"
TREES = {
    "1000_nested_dirs": NESTED.format(depth=1000),
    "2100_nested_dirs_past_path_max": NESTED.format(depth=2100),
    "nested_dirs_in_tmp": "import os\nos.chdir('/tmp')\n" + NESTED.format(depth=1000),
    "nested_dirs_all_chmod_000": NESTED.format(depth=300)
    + "for _ in range(300):\n    os.chdir('..')\n    os.chmod('d', 0)\n",
    "unreadable_unwritable_dirs": "import os\nfor mode in (0, 0o100, 0o400, 0o500):\n"
    "    os.makedirs(f'm{mode}/inner')\n    open(f'm{mode}/inner/f', 'w').close()\n"
    "    os.chmod(f'm{mode}/inner', mode)\n    os.chmod(f'm{mode}', mode)\n",
    "read_only_files_in_read_only_dir": "import os\nos.mkdir('ro')\n"
    "for i in range(50):\n    open(f'ro/{i}', 'w').close()\n    os.chmod(f'ro/{i}', 0)\n"
    "os.chmod('ro', 0o555)\nos.chmod('.', 0o555)\n",
    "symlink_loops": "import os\nos.symlink('a', 'b')\nos.symlink('b', 'a')\n"
    "os.symlink('.', 'self')\nos.symlink('..', 'up')\nos.symlink('/', 'root')\n"
    "os.mkdir('x')\nos.symlink('../x', 'x/loop')\n",
    "fifos_and_sockets": "import os, socket\nos.mkfifo('fifo')\nos.mkfifo('/tmp/fifo')\n"
    "s = socket.socket(socket.AF_UNIX)\ns.bind('sock')\ns.listen()\n"
    "t = socket.socket(socket.AF_UNIX)\nt.bind('/tmp/sock')\n",
    "odd_names": "import os\nfor name in (b'new\\nline', b'\\xff\\xfe', b'-rf', b' ', b'..."
    "'):\n    os.mkdir(name)\n    open(os.path.join(name, b'\\x01'), 'w').close()\n",
    "hard_links_and_sticky_bits": "import os\nopen('f', 'w').close()\n"
    "for i in range(100):\n    os.link('f', f'l{i}')\nos.mkdir('s')\nos.chmod('s', 0o1777)\n"
    "os.chmod('f', 0o6777)\n",
    "every_inode_used": "import os\ntry:\n    for i in range(10**6):\n"
    "        open(f'/tmp/{i}', 'w').close()\nexcept OSError:\n    pass\n",
    "every_byte_used": "try:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n"
    "            f.write(b'0' * 2**20)\n            f.flush()\nexcept OSError:\n    pass\n",
    "open_file_handles_left": "import os\nhandles = [open(f'h{i}', 'w') for i in range(50)]\n"
    "os.chmod('.', 0)\n",
    "child_keeps_writing_after_exit": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
    "    i = 0\n    while True:\n        os.makedirs(f'/tmp/late/{i}', exist_ok=True)\n"
    "        i += 1\ntime.sleep(0.2)\n",
}


@pytest.mark.parametrize("name", sorted(TREES))
def test_a_pathological_tree_is_the_programs_business_not_the_workers(name, pool):
    result = pool.grade(TREES[name] + "def f():\n    return 1\n", "assert f() == 1", timeout=20)
    assert result.status == "passed", result.feedback
    assert [r.passed for r in pool.grade_many([("x = 1", "assert x == 1")] * 4)] == [True] * 4


def test_remove_tree_deletes_what_programs_leave_without_namespaces(tmp_path):
    from rise_gym.graders._sandbox.filesystem import remove_tree

    for name, program in TREES.items():
        if "/tmp" in program or "fork" in program:
            continue
        folder = tmp_path / name
        folder.mkdir()
        code = program.replace("handles = ", "_ = ")
        pid = os.fork()
        if pid == 0:  # as in the sandbox: the program in its own process, in its folder
            os.chdir(folder)
            try:
                exec(code, {})
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert remove_tree(str(folder)), name
        assert not folder.exists()


def test_without_namespaces_a_pathological_tree_is_removed():
    with pytest.warns(RuntimeWarning, match="network isolation"):
        pool = CodePool(workers=1, isolation="none")
        pool.grade("", "pass")
    with pool:
        root = pool._idle[0]
        for name in (
            "2100_nested_dirs_past_path_max",
            "nested_dirs_all_chmod_000",
            "fifos_and_sockets",
        ):
            program = TREES[name].replace("/tmp/", "tmp-")
            assert pool.grade(program, "pass", timeout=30).passed, name
        assert pool._idle == [root]  # cleanup worked: the same worker serves on


def test_grade_many_keeps_the_batch_whatever_the_programs_do(pool):
    jobs = [(program, "pass") for program in TREES.values()]
    jobs += [(program, tests) for program, tests, _, _ in HOSTILE.values()][:10]
    jobs.append(("x = 1", "assert x == 1"))
    results = pool.grade_many(jobs, timeout=10)
    assert len(results) == len(jobs) and results[-1].passed


# Workers killed from outside, timeouts that can never run, workers in an unknown state.


@pytest.mark.parametrize("wait_for_death", [True, False])
def test_a_worker_killed_between_jobs_is_replaced_and_the_job_runs(wait_for_death):
    with CodePool(workers=1) as pool:
        pool.grade("", "pass")
        worker = pool._idle[0]
        os.killpg(worker.process.pid, signal.SIGKILL)
        if wait_for_death:
            worker.process.wait()
        assert pool.grade("x = 1", "assert x == 1").passed
        assert pool._idle[0] is not worker and pool._started == 1


@pytest.mark.parametrize(
    "timeout, error",
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (float("-inf"), ValueError),
        (1e300, ValueError),
        (3601, ValueError),
        (0, ValueError),
        (-1, ValueError),
        (True, TypeError),
        ("5", TypeError),
        (None, TypeError),
    ],
)
def test_a_timeout_that_cannot_run_is_refused_before_any_worker_starts(timeout, error):
    pool = CodePool(workers=1)
    with pytest.raises(error, match="timeout"):
        pool.grade("x = 1", "pass", timeout=timeout)
    with pytest.raises(error, match="timeout"):
        pool.grade_many([("x = 1", "pass")], timeout=timeout)
    assert pool._started == 0


@pytest.mark.parametrize("program, tests", [(b"x = 1", "pass"), ("x = 1", None), (None, "pass")])
def test_programs_and_tests_must_be_text(program, tests):
    pool = CodePool(workers=1)
    with pytest.raises(TypeError, match="must be a str"):
        pool.grade(program, tests)
    assert pool._started == 0


def test_a_worker_interrupted_mid_job_is_never_put_back(monkeypatch):
    from rise_gym.graders._sandbox import worker as worker_module

    with CodePool(workers=1) as pool:
        pool.grade("", "pass")
        worker = pool._idle[0]
        real = worker_module.read_frame
        calls = []

        def interrupted(fd, deadline=None):
            calls.append(fd)
            if len(calls) == 2:  # the verdict: the job ran, its reply is never read
                raise KeyboardInterrupt
            return real(fd, deadline)

        monkeypatch.setattr(worker_module, "read_frame", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pool.grade("x = 1", "pass")
        monkeypatch.undo()
        assert pool._idle == [] and not worker.alive
        assert pool.grade("x = 1", "assert x == 1").passed


# Scratch space: fresh and size-limited per job; no writable host path anywhere.


@pytest.fixture(scope="module")
def one_worker():
    with CodePool(workers=1, max_disk_mb=32) as pool:
        yield pool


@pytest.mark.parametrize("folder", ["/tmp", "/dev/shm", "/var/tmp", "."])
def test_jobs_on_one_worker_share_no_scratch_space(folder, one_worker):
    path = f"{folder}/left-by-an-earlier-job"
    writer = f"with open('{path}', 'w') as f:\n    f.write('secret')\n"
    assert one_worker.grade(writer, "pass").passed
    assert one_worker.grade("import os", f"assert not os.path.exists('{path}')").passed
    filler = (  # files of 1 MiB, under the file size limit, until the space is full
        f"i = 0\ntry:\n    while True:\n        with open(f'{folder}/fill{{i}}', 'wb') as f:\n"
        "            f.write(b'0' * 2**20)\n        i += 1\nexcept OSError as e:\n"
        "    error = e\n"
    )
    assert one_worker.grade(filler, "assert error.errno == 28 and i < 40").passed  # ENOSPC
    again = "with open('big', 'wb') as f:\n    f.write(b'0' * 2**20 * 8)\n"
    assert one_worker.grade(again, "pass").passed


def test_total_disk_use_is_capped_across_files(one_worker):
    program = (
        "written = 0\ntry:\n    for i in range(100):\n        with open(f'/tmp/{i}', 'wb') as f:\n"
        "            f.write(b'0' * 2**20 * 15)\n        written += 15\nexcept OSError:\n    pass\n"
    )
    assert one_worker.grade(program, "assert written <= 32").passed


HOST_FOLDERS = [
    "/var/tmp",
    "/run/lock",
    "/run",
    "/dev/shm",
    "/root",
    "/home",
    "/etc",
    "/usr/local",
    "/opt",
    "/srv",
    "/mnt",
    "/",
    sys.prefix,
    os.getcwd(),
]


def test_no_host_folder_is_writable(one_worker):
    marker = f"rise-sandbox-marker-{os.getpid()}"
    program = (
        "import os\nwritten = []\n"
        f"for folder in {HOST_FOLDERS!r}:\n"
        "    try:\n"
        f"        with open(os.path.join(folder, '{marker}'), 'w') as f:\n"
        "            f.write('x')\n        written.append(os.path.realpath(folder))\n"
        "    except OSError:\n        pass\n"
        "mounts = [line.split() for line in open('/proc/self/mounts')]\n"
        "writable = sorted(m[1] for m in mounts if 'rw' in m[3].split(',')\n"
        "                  and m[1] not in ('/tmp', '/proc'))\n"
    )
    tests = "assert writable == [], writable\nassert set(written) <= {'/tmp'}, written"
    result = one_worker.grade(program, tests)  # /var/tmp and /dev/shm lead to the job's /tmp
    assert result.passed, result.feedback
    for folder in HOST_FOLDERS:
        assert not os.path.exists(os.path.join(folder, marker)), folder


# Unix sockets on the host, by path and abstract, are out of reach.


@pytest.fixture(scope="module")
def host_listeners():
    import socket

    paths = [
        f"{folder}/rise-probe-{os.getpid()}.sock" for folder in ("/var/tmp", "/tmp", "/dev/shm")
    ]
    listeners = []
    for address in [*paths, f"\0rise-probe-{os.getpid()}"]:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen()
        if not address.startswith("\0"):
            os.chmod(address, 0o777)
        listeners.append(listener)
    yield [*paths, f"\0rise-probe-{os.getpid()}"]
    for listener, address in zip(listeners, paths + [""]):
        listener.close()
        if address:
            os.unlink(address)


@pytest.mark.parametrize("kind", ["var_tmp", "tmp", "dev_shm", "abstract"])
def test_host_unix_sockets_are_unreachable(kind, pool, host_listeners):
    address = host_listeners[["var_tmp", "tmp", "dev_shm", "abstract"].index(kind)]
    program = (
        "import socket\nreached = False\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
        f"    s.connect({address!r})\n    reached = True\nexcept OSError:\n    pass\n"
    )
    result = pool.grade(program, "assert not reached")
    assert result.passed and result.network_isolated, result.feedback


# Capabilities: none at all.

CAPABILITY_PROBES = {
    "shadow": "open('/etc/shadow').read()",
    "setuid_root": "import os\nos.setuid(0)",
    "chown": "import os\nopen('f', 'w').close()\nos.chown('f', 0, 0)",
    "raw_socket": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, 1)",
    "mount": "import ctypes\nlibc = ctypes.CDLL(None)\n"
    "assert libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0",
    "kill_init": "import os\nos.kill(1, 9)\nimport time\ntime.sleep(0.5)\nassert False, 'alive'",
    "read_proc_1_root": "import os\nos.listdir('/proc/1/root/')",
    "chroot": "import os\nos.chroot('/tmp')",
}


def test_programs_hold_no_capability(pool):
    program = "status = open('/proc/self/status').read().splitlines()\n"
    tests = (
        "caps = {l.split(':')[0]: int(l.split()[1], 16) for l in status if l.startswith('Cap')}\n"
        "assert caps == dict.fromkeys(['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'], 0), caps"
    )
    assert pool.grade(program, tests).passed


@pytest.mark.parametrize("name", sorted(CAPABILITY_PROBES))
def test_a_privileged_action_fails(name, pool):
    result = pool.grade(CAPABILITY_PROBES[name], "pass")
    assert result.status in {"runtime_error", "failed"}, result.stdout


# Forging a pass through audit hooks and frames: every route reaches no nonce.

SCAN = (
    "import os, re\nHEX = re.compile('^[0-9a-f]{32}$')\n"
    "def forge(values):\n    for value in values:\n"
    "        if isinstance(value, bytes):\n            value = value.decode('latin-1')\n"
    "        if isinstance(value, dict):\n            forge(list(value.values()))\n"
    "        elif isinstance(value, str) and HEX.match(value):\n"
    "            os.write(3, b'passed ' + value.encode() + b'\\n')\n            os._exit(0)\n"
    "def walk(frame):\n    while frame is not None:\n        forge(list(frame.f_locals.values()))\n"
    "        frame = frame.f_back\n"
)
FORGERS = {
    "getframe_walk": "import sys\ndef f(x):\n    walk(sys._getframe())\n    return x\n",
    "inspect_stack": "import inspect\ndef f(x):\n    for info in inspect.stack():\n"
    "        walk(info.frame)\n    return x\n",
    "traceback_frame": "def f(x):\n    try:\n        raise ValueError\n"
    "    except ValueError as e:\n        walk(e.__traceback__.tb_frame)\n    return x\n",
    "sys_exc_info_frame": "import sys\ndef f(x):\n    try:\n        1 / 0\n"
    "    except ZeroDivisionError:\n        walk(sys.exc_info()[2].tb_frame)\n    return x\n",
    "generator_frame": "def f(x):\n    def g():\n        yield me.gi_frame.f_back\n"
    "    me = g()\n    walk(next(me))\n    return x\n",
    "coroutine_frame": "def f(x):\n    async def c():\n        return 1\n    co = c()\n"
    "    walk(co.cr_frame)\n    co.close()\n    return x\n",
    "gc_objects": "import gc\ndef f(x):\n    forge(gc.get_objects())\n    return x\n",
    "gc_referrers": "import gc\ndef f(x):\n    forge(gc.get_referrers(f))\n    return x\n",
    "current_frames_thread": "import sys, threading\ndef f(x):\n    t = threading.Thread(target="
    "lambda: [walk(fr) for fr in sys._current_frames().values()])\n    t.start()\n"
    "    t.join()\n    return x\n",
    "settrace": "import sys\nsys.settrace(lambda frame, event, arg: walk(frame))\n"
    "def f(x):\n    return x\n",
    "setprofile": "import sys\nsys.setprofile(lambda frame, event, arg: walk(frame))\n"
    "def f(x):\n    return x\n",
    "threading_settrace": "import threading\nthreading.settrace(lambda fr, ev, a: walk(fr))\n"
    "def f(x):\n    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()\n"
    "    return x\n",
    "audit_hook": "import sys\ndef hook(event, args):\n    forge(list(args))\n"
    "    walk(sys._getframe())\nsys.addaudithook(hook)\ndef f(x):\n    return x\n",
    "audit_hook_via_sys_modules": "import sys\nsys.modules['sys'].addaudithook("
    "lambda e, a: forge(list(a)))\ndef f(x):\n    open('/dev/null').close()\n    return x\n",
    "signal_handler_frames": "import signal, threading\nseen = []\n"
    "signal.signal(signal.SIGALRM, lambda s, frame: seen.append(frame))\n"
    "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\n"
    "def poll():\n    while True:\n        for frame in list(seen):\n            walk(frame)\n"
    "threading.Thread(target=poll, daemon=True).start()\n"
    "def f(x):\n    import time\n    time.sleep(0.05)\n    return x\n",
    "del_and_gc_callback": "import gc, sys\nclass Spy:\n    def __del__(self):\n"
    "        walk(sys._getframe())\ngc.callbacks.append(lambda *a: walk(sys._getframe()))\n"
    "def f(x):\n    a = Spy()\n    a.me = a\n    return x\n",
    "zygote_main_module": "import __main__\ndef f(x):\n    forge(list(vars(__main__).values()))\n"
    "    return x\n",
}


@pytest.mark.parametrize("name", sorted(FORGERS))
def test_audit_hooks_and_frames_cannot_forge_a_pass(name, pool):
    result = pool.grade(SCAN + FORGERS[name], "assert f(1) == 2", timeout=5)
    assert not result.passed and result.status in {"failed", "runtime_error"}, result


def test_the_standard_library_still_works_without_frames(pool):
    program = (
        "import collections, dataclasses, enum, logging, typing, warnings\n"
        "P = collections.namedtuple('P', 'a b')\nclass N(typing.NamedTuple):\n    a: int\n"
        "E = enum.Enum('E', 'x y')\nD = dataclasses.make_dataclass('D', ['a'])\n"
        "logging.getLogger('x').warning('logged')\nwarnings.warn('warned')\n"
        "def f():\n    return P(1, 2).a + N(1).a + E.x.value + D(1).a\n"
    )
    result = pool.grade(program, "assert f() == 4")
    assert result.passed and "logged" in result.stderr, result.feedback


# Third-party packages: read-only, wherever the interpreter lives (even under /tmp).


def test_programs_import_site_packages_read_only(pool):
    import numpy

    folder = os.path.dirname(os.path.dirname(numpy.__file__))
    program = (
        "import numpy\nimport os\ntry:\n"
        f"    open({folder!r} + '/probe', 'w')\n    writable = True\n"
        "except OSError:\n    writable = False\n"
    )
    assert pool.grade(program, "assert numpy.arange(3).sum() == 3\nassert not writable").passed


def test_a_venv_under_tmp_is_visible_to_programs(tmp_path, monkeypatch):
    import subprocess
    import venv

    assert str(tmp_path).startswith("/tmp/")
    venv.create(tmp_path / "venv", with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "rise_probe_package.py").write_text("VALUE = 42\n")
    monkeypatch.setattr(sys, "executable", str(python))
    with CodePool(workers=1) as pool:
        program = (
            "import rise_probe_package\nimport os\ntry:\n"
            f"    open({site!r} + '/x', 'w')\n    writable = True\nexcept OSError:\n"
            "    writable = False\nleft = os.path.exists('/tmp/' + 'left')\n"
            "open('/tmp/left', 'w').close()\n"
        )
        tests = "assert rise_probe_package.VALUE == 42\nassert not writable\nassert not left"
        for _ in range(2):  # the second job gets the package again in a fresh /tmp
            result = pool.grade(program, tests)
            assert result.passed, result.feedback
