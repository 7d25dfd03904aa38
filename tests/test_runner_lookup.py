"""Finding the local Prism binary (``pipelines/runners.py``): no runner is started here."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
)

from pipelines import runners
from pipelines.ingest import local_runner


@pytest.fixture
def no_prism(monkeypatch, tmp_path):
    """Nothing to find: no variable, no checkout binary, nothing on PATH."""
    monkeypatch.delenv(runners.PRISM_ENV, raising=False)
    monkeypatch.setattr(runners, "CHECKOUT_PRISM", tmp_path / "absent" / "prism")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return tmp_path


def _executable(path):
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_absent_prism_names_the_script(no_prism):
    assert runners.find_prism() is None
    with pytest.raises(runners.PrismNotFound, match="deploy/local-runners.sh"):
        runners.require_prism()
    with pytest.raises(runners.PrismNotFound):
        local_runner(PipelineOptions(["--runner=PrismRunner"]))


def test_lookup_order(no_prism, monkeypatch):
    on_path = no_prism / "empty"
    on_path.mkdir()
    assert runners.find_prism() is None
    path_prism = _executable(on_path / "prism")
    assert runners.find_prism() == path_prism
    checkout = no_prism / "checkout-prism"
    monkeypatch.setattr(runners, "CHECKOUT_PRISM", checkout)
    _executable(checkout)
    assert runners.find_prism() == str(checkout)
    chosen = _executable(no_prism / "chosen")
    monkeypatch.setenv(runners.PRISM_ENV, chosen)
    assert runners.find_prism() == chosen
    # A variable that names no executable is an error, not a silent fallback.
    (no_prism / "plain").write_text("not a program")
    monkeypatch.setenv(runners.PRISM_ENV, str(no_prism / "plain"))
    with pytest.raises(runners.PrismNotFound, match="not an executable"):
        runners.find_prism()


def test_local_runner_fills_the_prism_location(no_prism, monkeypatch):
    chosen = _executable(no_prism / "chosen")
    monkeypatch.setenv(runners.PRISM_ENV, chosen)
    options = local_runner(PipelineOptions(["--runner=PrismRunner"]))
    assert options.view_as(PrismRunnerOptions).prism_location == chosen
    given = local_runner(PipelineOptions(["--runner=PrismRunner",
                                          "--prism_location=/opt/prism"]))
    assert given.view_as(PrismRunnerOptions).prism_location == "/opt/prism"
    fn = local_runner(PipelineOptions([]))
    assert fn.view_as(PrismRunnerOptions).prism_location is None
    assert runners.prism_args(chosen) == ["--runner=PrismRunner",
                                          f"--prism_location={chosen}"]


def test_a_download_url_is_left_to_beam(no_prism):
    """A --prism_location that is not a local file (a release URL) is Beam's to fetch:
    no Prism is started for it here."""
    options = PipelineOptions(["--runner=PrismRunner",
                               "--prism_location=https://example.invalid/prism.zip"])
    with runners.prism_for_run(options) as run_options:
        assert run_options.view_as(PortableOptions).job_endpoint is None
    fn = PipelineOptions(["--runner=FnApiRunner"])
    with runners.prism_for_run(fn) as run_options:
        assert run_options.view_as(PortableOptions).job_endpoint is None
