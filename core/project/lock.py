"""One writer per project: an exclusive lock on a small file beside the project, naming its holder.

SQLite's own locks are POSIX advisory locks, which a process loses *all* of as soon as it closes
*any* descriptor of the database file (a file dialog sniffing the file type, a header check):
another process then believes it is the database's last user and checkpoints and deletes the
``-wal`` under the writer's feet (SQLite's "How To Corrupt An SQLite Database File", 2.2). So the
project is guarded by a second lock that nothing else touches:

* ``PROJECT.lock`` is locked with ``flock`` (Windows: ``msvcrt.locking``), which belongs to the
  open file description, not to the process: closing some other descriptor never releases it, and
  the kernel releases it when the holder dies, so a crash leaves no stale lock behind.
* The holder writes who it is (program, pid, host, user, since when) into the file, so a refused
  second writer can name it.

Writers (the app, ``cellseg project create --force``) take the lock before they connect; readers
(``cellseg project info``, ``cellseg export``, the training dialog's data export) take none and
connect read-only, which can never checkpoint or delete the ``-wal``.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import DataError

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        # lock one byte far past the holder text, so readers can still read the text
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class ProjectLockedError(DataError):
    """The project is open for writing in another window or process."""

    def __init__(self, project: Path, holder: str):
        super().__init__(f"project {project} is already open in {holder}; close it there first "
                         "(read-only commands such as `cellseg project info` and `cellseg export` "
                         "still work)")
        self.holder = holder


def lock_path(project: str | Path) -> Path:
    project = Path(project)
    return project.with_name(project.name + ".lock")


class ProjectLock:
    """The exclusive write lock of one project; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, project: str | Path, program: str | None = None) -> "ProjectLock":
        """Take the project's lock or raise :class:`ProjectLockedError` naming the holder.

        Args:
            project: the project database file.
            program: what to call the holder in other processes' messages (default: the
                running program's name).
        """
        path = lock_path(project)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataError(f"cannot lock project {project}: {exc.strerror} ({path})") from exc
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise ProjectLockedError(Path(project), holder)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(_holder_info(program)).encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the only descriptor of the lock releases it
        self._fd = None


def _holder_info(program: str | None) -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers): the uid still names them
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return {"program": program or _program_name(), "pid": os.getpid(),
            "host": socket.gethostname(), "user": user,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _program_name() -> str:
    main = Path(sys.argv[0] or "python")
    # ``python -m pkg`` runs pkg/__main__.py: the package names the program
    return main.parent.name if main.name == "__main__.py" else main.name


def _read_holder(fd: int) -> str:
    """Who holds the lock, in words (the holder may still be writing its details)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return (f"{info['program']} (pid {info['pid']} on {info['host']}, user {info['user']}, "
                f"since {info['since']})")
    except (OSError, ValueError, KeyError):
        return "another program"
