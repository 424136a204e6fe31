"""What a graded program sees of the file system, and how its leftovers are removed.

With namespaces the zygote (root of its own mount namespace) replaces its root with a
small tmpfs holding read-only bind mounts of the system folders and of the Python
installation (prefixes and every ``sys.path`` folder, at their own paths), a private
/proc, a /dev with a few harmless devices, and nothing else: no /home, /root, /run,
/var or host /tmp, so no writable host folder and no host Unix socket outside those
read-only folders. Each job then gets a fresh tmpfs on /tmp, limited in bytes and
inodes, which is unmounted after the job: whatever tree the program left there (deep,
unreadable, fifos, sockets, symlink loops) goes at once. Folders of the installation
that live under the host /tmp are bound into each job's /tmp afresh.

Without namespaces each job has a work folder under the host's temporary folder and
`remove_tree` deletes it without recursion and without following links.

Standard library only: the zygote loads this file by path.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41}
"""pivot_root(2) has no libc wrapper: its syscall number per machine."""
STAGED = "/.python-under-tmp"
"""Where Python folders found under the host /tmp wait, read-only, between jobs."""
WORK = "/tmp/work"
"""The program's working directory (and home) inside its scratch /tmp."""

_libc = ctypes.CDLL(None, use_errno=True)


class PrivateRoot:
    """The sandbox's own root (built once per zygote) and each job's scratch /tmp."""

    def __init__(self) -> None:
        """Build the root and move into it (call as root of a fresh mount namespace).

        Raises:
            OSError: A mount failed; the zygote cannot isolate programs.
        """
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates to the host
        sources = _python_dirs()
        # opened first: the host /tmp, where some of them may be, is hidden from the staging on
        handles = {path: os.open(path, os.O_PATH) for path in SYSTEM_DIRS if os.path.lexists(path)}
        for path in sources:
            handles.setdefault(path, os.open(path, os.O_PATH))
        # folders under the host /tmp wait in STAGED, to be bound into each job's /tmp
        self._under_tmp = {
            path: f"{STAGED}/{index}"
            for index, path in enumerate(path for path in sources if _is_under(path, "/tmp"))
        }
        new = "/tmp"  # the staging point: the host /tmp is hidden from here on
        _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
        for path, handle in handles.items():
            target = new + self._under_tmp.get(path, path)
            if path in SYSTEM_DIRS and os.path.islink(path):  # merged /usr: /bin -> usr/bin
                os.symlink(os.readlink(path), target)
            elif path in self._under_tmp or not _visible_in(new, path):
                os.makedirs(target, exist_ok=True)
                _bind_read_only(f"/proc/self/fd/{handle}", target)
            os.close(handle)
        self._make_dev(new + "/dev")
        for folder in ("/proc", "/tmp", "/var"):
            os.makedirs(new + folder, exist_ok=True)
        if not os.path.lexists(new + "/var/tmp"):
            os.symlink("/tmp", new + "/var/tmp")
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.chdir(new)
        _pivot_root()
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.chdir("/")

    def open_job(self, size_bytes: int, inodes: int, uid: int | None) -> str:
        """Mount a fresh /tmp for one job; returns its work directory, owned by ``uid``."""
        options = f"mode=1777,size={size_bytes},nr_inodes={inodes}"
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)
        for path, staged in self._under_tmp.items():
            os.makedirs(path, exist_ok=True)
            _bind_read_only(staged, path)
        os.mkdir(WORK, 0o700)
        if uid is not None:
            os.chown(WORK, uid, uid)
        return WORK

    def close_job(self) -> bool:
        """Drop the job's /tmp and everything in it; False if it could not be detached."""
        return _libc.umount2(b"/tmp", MNT_DETACH) == 0

    def close(self) -> None:
        """Nothing to remove: the mounts end with the namespace."""

    @staticmethod
    def _make_dev(dev: str) -> None:
        os.makedirs(dev)
        _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
        for name in DEVICES:
            if os.path.exists("/dev/" + name):
                open(f"{dev}/{name}", "w").close()
                _bind_read_only("/dev/" + name, f"{dev}/{name}", MS_NOSUID)  # still writable
        for name, target in (("fd", "/proc/self/fd"), ("shm", "/tmp")) + tuple(
            (stream, f"/proc/self/fd/{number}")
            for number, stream in enumerate(("stdin", "stdout", "stderr"))
        ):
            os.symlink(target, f"{dev}/{name}")
        _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


class HostFolder:
    """Without namespaces: each job's work directory under one folder of the host's /tmp."""

    def __init__(self) -> None:
        """Create the folder (mode 711: a dropped uid enters its own job's, lists none)."""
        self.root = tempfile.mkdtemp(prefix="rise-sandbox-")
        os.chmod(self.root, 0o711)
        self._current = ""

    def open_job(self, size_bytes: int, inodes: int, uid: int | None) -> str:
        """A fresh work directory owned by ``uid`` (no size limit but the file size one)."""
        self._current = tempfile.mkdtemp(prefix="run-", dir=self.root)
        if uid is not None:
            os.chown(self._current, uid, uid)
        return self._current

    def close_job(self) -> bool:
        """Delete the job's work directory; False if something could not be removed."""
        return remove_tree(self._current)

    def close(self) -> None:
        """Delete the whole folder."""
        remove_tree(self.root)


def remove_tree(path: str) -> bool:
    """Delete ``path`` whatever a program left in it; False if anything remains.

    No recursion and no path longer than two levels: every sub-folder is first moved up
    to ``path`` itself, so a tree thousands of levels deep is as easy as a flat one. No
    link is followed and no file opened (fifos, sockets, links to anywhere are just
    unlinked); folders are opened up (``chmod 700``) before they are read.
    """
    pending, moved = [path], 0
    while pending:
        folder = pending.pop()
        try:
            os.chmod(folder, 0o700, follow_symlinks=False)
            with os.scandir(folder) as scan:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
        except OSError:
            continue
        for name, is_dir in entries:
            child = os.path.join(folder, name)
            if not is_dir:
                _ignore_errors(os.unlink, child)
            elif folder == path:
                pending.append(child)
            else:
                moved += 1
                flat = os.path.join(path, f".removing-{moved}")
                pending.append(flat if _ignore_errors(os.rename, child, flat) else child)
        if folder != path:
            _ignore_errors(os.rmdir, folder)
    _ignore_errors(os.rmdir, path)
    return not os.path.lexists(path)


def _python_dirs() -> list[str]:
    """The folders an import may read: the prefixes and ``sys.path``, parents first."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path}
    found = {os.path.abspath(path) for path in paths if path and os.path.isdir(path)}
    found |= {os.path.realpath(path) for path in found}
    return sorted(found, key=lambda path: (path.count("/"), path))


def _visible_in(new: str, path: str) -> bool:
    """Whether ``path`` already shows, unchanged, through a folder bound before it."""
    parent = os.path.dirname(path)
    while parent != "/":
        if os.path.ismount(new + parent):
            return os.path.realpath(path) == path and os.stat(path).st_dev == os.stat(parent).st_dev
        parent = os.path.dirname(parent)
    return False


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _bind_read_only(source: str, target: str, flags: int = MS_NOSUID | MS_NODEV) -> None:
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def _pivot_root() -> None:
    """Make the current directory the root and detach the old one (``pivot_root . .``)."""
    number = PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown syscall number on {os.uname().machine}")
    if _libc.syscall(number, b".", b".") != 0:
        raise OSError(ctypes.get_errno(), "pivot_root failed")
    if _libc.umount2(b".", MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "detaching the old root failed")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    encoded = [None if text is None else text.encode() for text in (source, target, kind)]
    if _libc.mount(*encoded, flags, data.encode() or None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def _ignore_errors(function, *args) -> bool:  # type: ignore[no-untyped-def]
    try:
        function(*args)
    except OSError:
        return False
    return True
