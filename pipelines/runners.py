"""Finding the local Beam runners that ``deploy/local-runners.sh`` builds.

Prism is Beam's portable local runner (a Go program). Beam's ``PrismRunner`` downloads a
release binary from the internet unless ``--prism_location`` names one; this module finds
a local binary so that nothing is downloaded at run time:

1. ``$NEWSBEAM_PRISM``, when set (it must name an executable file);
2. ``.runners/bin/prism`` in the project checkout (where the script puts it);
3. ``prism`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions, PrismRunnerOptions

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
    from apache_beam.options.pipeline_options import StandardOptions

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
