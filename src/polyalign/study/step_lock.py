"""One step runs in one process at a time: an exclusive lock on a file in the step's folder.

Why: two `polyalign run` processes on one run folder (or two run folders sharing a --steps-dir,
or a local run beside a Ray run) would otherwise run the same step together, and a training
that resumes removes the other's half-written checkpoints and truncates its log. The lock is
flock(2): the kernel drops it when its process ends, however it ends, so a killed run leaves no
stuck lock and no stale file to clean up.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from polyalign.study.steps import LOCK_NAME  # empty; never removed (two processes would lock two files)


class StepLock:
    """The lock of one step folder; `acquire(wait=False)` says whether this process now holds it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.handle: IO[str] | None = None

    def acquire(self, wait: bool) -> bool:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: unlocked, as before
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  # kept open: the lock lives as long as the file
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file drops the flock
            self.handle = None

    def __enter__(self) -> StepLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
