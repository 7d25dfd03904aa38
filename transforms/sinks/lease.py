"""One writer per output folder: a lease file with an owner, a heartbeat and stale takeover.

Every command that writes an output folder (``ingest``, ``watch``, ``compact``) holds the
lease ``DIR/_lock.json`` from before it reads the folder until its last file is
published::

    with OutputLease(root, run_id, wait=0):
        ...   # recover, run the pipeline, publish

The lease names its owner (host, pid, the pid's start time, run id) and a heartbeat time
that a background thread renews every third of the lease time. A second writer:

* waits up to ``wait`` seconds, polling, then gives up with :class:`LeaseBusy` (a one-line
  message naming the holder; the commands exit with :data:`EXIT_BUSY`);
* takes the lease over at once when the holder is gone: same host and its pid is dead or
  was reused (a SIGKILLed run leaves its lease behind), or when the heartbeat is older than
  the lease time (another host that stopped renewing).

On a local disk the lease is created with ``os.link`` (atomic, fails if it exists) and
every check-and-change of it happens under ``fcntl.flock`` on ``DIR/_lock.guard``, so two
starters never both win and a takeover never steals a live lease. A holder whose lease
was taken over (its heartbeat stopped for longer than the lease time) notices at its next
renewal and is told through :attr:`OutputLease.lost`.

On object stores (``gs://``, ``s3://``) the same file is read and written through Beam's
file systems, but there is no atomic create-if-absent: the lease is advisory there. Two
runs started within the same second may both proceed; run one writer per output prefix
(a single scheduled job) and use the lease to catch mistakes, not as a guarantee.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

LEASE_FILE = "_lock.json"
GUARD_FILE = "_lock.guard"
DEFAULT_LEASE_SECONDS = 60.0
EXIT_BUSY = 75
"""Exit code of a command that found the output folder held by another run (EX_TEMPFAIL)."""

_HELD: dict[str, OutputLease] = {}
"""Leases this process holds, by folder: a nested writer (``ingest --streaming`` running
the watch loop) shares its caller's lease instead of waiting for itself."""
_HELD_LOCK = threading.Lock()


class LeaseBusy(RuntimeError):
    """The output folder is held by another live run."""


def _pid_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the ")" that ends the (possibly spaced) command name.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` is alive and is the one that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is None:
        return True
    now = _pid_start(pid)
    return now is None or now == start


@dataclass
class Holder:
    """Who holds a lease, as written in the lease file."""

    host: str
    pid: int
    pid_start: str | None
    run_id: str
    token: str
    acquired_at: float
    heartbeat_at: float
    lease_seconds: float
    command: str = ""

    def describe(self, now: float) -> str:
        age = max(0.0, now - self.heartbeat_at)
        what = f"{self.command} " if self.command else ""
        return (f"{what}run {self.run_id} (pid {self.pid} on {self.host}, "
                f"heartbeat {age:.0f} s ago)")

    def stale(self, now: float, host: str) -> bool:
        """Whether a new writer may take this lease over."""
        if now - self.heartbeat_at > self.lease_seconds:
            return True
        return self.host == host and not pid_alive(self.pid, self.pid_start)


class OutputLease:
    """The writer lease of one output folder; a context manager.

    ``clock`` gives POSIX seconds (tests inject one); ``sleep`` waits between tries;
    ``heartbeat=False`` leaves renewal to the caller (:meth:`renew`); ``reentrant=False``
    makes a second lease of this process on the same folder compete like another
    process's would (tests).
    """

    def __init__(self, root: str, run_id: str, wait: float = 0.0,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, command: str = "",
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, heartbeat: bool = True,
                 reentrant: bool = True):
        if lease_seconds <= 0:
            raise ValueError("the lease time must be positive")
        self.root = root.rstrip("/")
        self.run_id = run_id
        self.wait = max(0.0, wait)
        self.lease_seconds = lease_seconds
        self.command = command
        self._clock = clock
        self._sleep = sleep
        self._heartbeat = heartbeat
        self._remote = "://" in root
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.lost = threading.Event()
        self.took_over: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        self._outer: OutputLease | None = None
        self._reentrant = reentrant

    # -- file access ---------------------------------------------------------------------

    @property
    def path(self) -> str:
        return f"{self.root}/{LEASE_FILE}"

    def _read(self) -> Holder | None:
        try:
            if self._remote:
                from apache_beam.io.filesystems import FileSystems

                with FileSystems.open(self.path) as f:
                    data = json.loads(f.read().decode("utf-8"))
            else:
                with open(self.path, encoding="utf-8") as f:
                    data = json.load(f)
            return Holder(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            if self._remote and "not found" in str(e).lower():
                return None
            # A lease file that cannot be read names no live owner: treat it as stale.
            return Holder("?", -1, None, "?", "?", 0.0, 0.0, self.lease_seconds)

    def _mine(self, now: float, acquired: float | None = None) -> Holder:
        return Holder(self.host, os.getpid(), _pid_start(os.getpid()), self.run_id,
                      self.token, acquired if acquired is not None else now, now,
                      self.lease_seconds, self.command)

    def _encode(self, holder: Holder) -> bytes:
        return json.dumps(asdict(holder), sort_keys=True).encode("utf-8")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialises check-and-change of the lease among processes on this machine."""
        if self._remote:
            yield
            return
        import fcntl

        os.makedirs(self.root, exist_ok=True)
        fd = os.open(f"{self.root}/{GUARD_FILE}", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _create(self, holder: Holder) -> bool:
        """Creates the lease file if absent, with its whole content at once."""
        data = self._encode(holder)
        if self._remote:
            from apache_beam.io.filesystems import FileSystems

            if FileSystems.exists(self.path):
                return False
            with FileSystems.create(self.path) as f:
                f.write(data)
            return True
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)  # fails if a lease exists: an atomic create
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _replace(self, holder: Holder) -> None:
        data = self._encode(holder)
        if self._remote:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.create(self.path) as f:
                f.write(data)
            return
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _remove(self) -> None:
        if self._remote:
            from apache_beam.io.filesystems import FileSystems

            with contextlib.suppress(Exception):
                FileSystems.delete([self.path])
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- the protocol --------------------------------------------------------------------

    def try_acquire(self) -> Holder | None:
        """One attempt: None when the lease is now ours, else the live holder."""
        with self._guard():
            now = self._clock()
            current = self._read()
            if current is not None:
                if current.token == self.token:
                    return None
                if not current.stale(now, self.host):
                    return current
                self._remove()  # a dead or silent holder: take over
                self.took_over = current
            if self._create(self._mine(now)):
                self.held = True
                return None
            return self._read() or current

    def acquire(self) -> OutputLease:
        """Takes the lease, waiting up to ``wait`` seconds; raises :class:`LeaseBusy`."""
        with _HELD_LOCK:
            outer = _HELD.get(self.root) if self._reentrant else None
            if outer is not None and outer.held:
                self._outer = outer
                self.lost = outer.lost
                return self
        deadline = self._clock() + self.wait
        while True:
            holder = self.try_acquire()
            if holder is None:
                break
            now = self._clock()
            if now >= deadline:
                hint = ("wait for it, pass --lock-wait SECONDS to wait longer"
                        if self.wait else "wait for it or pass --lock-wait SECONDS")
                raise LeaseBusy(f"{self.root} is being written by {holder.describe(now)}; "
                                f"{hint}")
            self._sleep(min(max(0.05, self.lease_seconds / 10), 1.0, deadline - now))
        if self._reentrant:
            with _HELD_LOCK:
                _HELD[self.root] = self
        if self._heartbeat:
            self._thread = threading.Thread(target=self._beat, name="newsbeam-lease",
                                            daemon=True)
            self._thread.start()
        return self

    def renew(self) -> bool:
        """Refreshes the heartbeat; False (and :attr:`lost` set) if the lease was taken."""
        with self._guard():
            current = self._read()
            if current is None or current.token != self.token:
                self.lost.set()
                self.held = False
                return False
            self._replace(self._mine(self._clock(), current.acquired_at))
            return True

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.renew():
                    return
            except OSError:
                continue  # a transient failure: the next beat tries again

    def release(self) -> None:
        """Stops the heartbeat thread (joined, so none outlives the lease) and removes
        the lease if it is still ours."""
        if self._outer is not None:
            self._outer = None
            return
        with _HELD_LOCK:
            if _HELD.get(self.root) is self:
                del _HELD[self.root]
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.held:
            return
        with self._guard():
            current = self._read()
            if current is not None and current.token == self.token:
                self._remove()
        self.held = False

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class WriterOptions(PipelineOptions):
    """Options of the writer lease, accepted by every command that writes an output."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--lock-wait", dest="lock_wait", type=float, default=0.0,
            help="Seconds to wait for another run that holds the output folder before "
                 f"giving up (exit code {EXIT_BUSY}). Default: 0 (give up at once).")
        parser.add_argument(
            "--lock-lease", dest="lock_lease", type=float, default=DEFAULT_LEASE_SECONDS,
            help="Seconds without a heartbeat after which a run's hold on the output "
                 "folder may be taken over (a run on this host whose process is gone is "
                 f"taken over at once). Default: {DEFAULT_LEASE_SECONDS:.0f}.")
