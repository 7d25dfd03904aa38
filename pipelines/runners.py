"""Finding the local Beam runners that ``deploy/local-runners.sh`` builds.

Prism is Beam's portable local runner (a Go program). Beam's ``PrismRunner`` downloads a
release binary from the internet unless ``--prism_location`` names one; this module finds
a local binary so that nothing is downloaded at run time:

1. ``$NEWSBEAM_PRISM``, when set (it must name an executable file);
2. ``.runners/bin/prism`` in the project checkout (where the script puts it);
3. ``prism`` on ``PATH``.

Beam's ``PrismRunner`` also starts Prism itself, as a process shared by every job of the
interpreter that it stops only at interpreter exit; the ``newsbeam`` command leaves
without that step (``pipelines/cli.py``), and runs measured here left one Prism process
behind each. :func:`prism_for_run` instead starts Prism for one run and stops it when the
run is over, and the runner is pointed at it with ``--job_endpoint``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

PRISM_ENV = "NEWSBEAM_PRISM"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKOUT_PRISM = PROJECT_ROOT / ".runners" / "bin" / "prism"


class PrismNotFound(RuntimeError):
    """No local Prism binary: build one with ``deploy/local-runners.sh``."""


def find_prism() -> str | None:
    """The path of a local Prism binary, or None."""
    configured = os.environ.get(PRISM_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise PrismNotFound(f"${PRISM_ENV}={configured} is not an executable file")
        return configured
    if CHECKOUT_PRISM.is_file() and os.access(CHECKOUT_PRISM, os.X_OK):
        return str(CHECKOUT_PRISM)
    return shutil.which("prism")


def require_prism() -> str:
    """Like :func:`find_prism`, but an absent binary is an error with the fix in it."""
    path = find_prism()
    if path is None:
        raise PrismNotFound("no Prism binary: run deploy/local-runners.sh (needs Go), or set "
                            f"${PRISM_ENV} to a prism executable")
    return path


def prism_args(path: str | None = None) -> list[str]:
    """Beam options that run a pipeline on the local Prism binary."""
    return ["--runner=PrismRunner", f"--prism_location={path or require_prism()}"]


def is_prism(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return (name or "").lower() in ("prismrunner", "prism")


def with_local_prism(options: PipelineOptions) -> PipelineOptions:
    """Fills ``--prism_location`` with the local binary when Prism is the runner and no
    location was given (Beam would otherwise try to download one)."""
    if is_prism(options):
        prism = options.view_as(PrismRunnerOptions)
        if not prism.prism_location:
            prism.prism_location = require_prism()
    return options


PRISM_START_TIMEOUT = 60.0
PRISM_STOP_TIMEOUT = 10.0
# If this process dies without stopping it (SIGKILL), Prism leaves by itself once idle.
PRISM_IDLE_SHUTDOWN = "10m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the Prism child before exec (Linux): SIGTERM when the launching thread dies, so
    a launcher killed outright does not leave Prism behind."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# Threads of the in-process SDK harness (LOOPBACK) that read from Prism: they end within
# a fraction of a second of a job's end. Stopping Prism under them makes each log an error.
_HARNESS_THREADS = ("read_state", "read_grpc_client_inputs", "run_worker",
                    "wait_until_finish_read")
HARNESS_GRACE = 5.0


def _stop(process: subprocess.Popen) -> None:
    deadline = time.monotonic() + HARNESS_GRACE
    for thread in threading.enumerate():
        if thread.name.startswith(_HARNESS_THREADS) and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(PRISM_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def prism_for_run(options: PipelineOptions) -> Iterator[PipelineOptions]:
    """Yields ``options``; when the runner is Prism and no ``--job_endpoint`` is given, a
    Prism process of this run's own serves the job, and is stopped when the block ends
    (read the job's metrics inside the block: they are fetched from Prism)."""
    with_local_prism(options)
    portable = options.view_as(PortableOptions)
    location = options.view_as(PrismRunnerOptions).prism_location
    if not is_prism(options) or portable.job_endpoint or not os.path.isfile(location or ""):
        # Not Prism, a job server of the caller's, or a download URL left to Beam.
        yield options
        return
    port = _free_port()
    process = subprocess.Popen(
        [location, "--job_port", str(port),
         "--serve_http=false", "--log_level=warn", "--log_kind=text",
         f"--idle_shutdown_timeout={PRISM_IDLE_SHUTDOWN}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        deadline = time.monotonic() + PRISM_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Prism exited at start with code {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Prism did not listen on port {port} within "
                                       f"{PRISM_START_TIMEOUT:.0f} s") from None
                time.sleep(0.1)
        portable.job_endpoint = f"localhost:{port}"
        if not portable.environment_type:
            portable.environment_type = "LOOPBACK"
        yield options
    finally:
        # The options may serve another run (watch cycles): that one starts its own Prism.
        portable.job_endpoint = None
        _stop(process)
