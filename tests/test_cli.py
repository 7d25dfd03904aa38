"""Argument parsing on its own: bad input gives one clear message, never a traceback."""

import subprocess
import sys

import pytest

from pipelines.ingest import parse_args


def test_parse_args_reads_sources_and_options(tmp_path):
    feeds = tmp_path / "feeds.txt"
    feeds.write_text("https://a.example/rss\n")
    config, options = parse_args(["--feeds", str(feeds), "--feeds", "https://b.example/rss",
                                  "--output", str(tmp_path / "out/"), "--fetch-threads", "4",
                                  "--allow-private-network", "--runner", "DirectRunner"])
    assert [f.url for f in config.subscriptions.feeds] == ["https://a.example/rss",
                                                          "https://b.example/rss"]
    assert config.output == str(tmp_path / "out")
    assert config.fetch_threads == 4 and config.policy.allow_private_network
    assert options.get_all_options()["runner"] == "DirectRunner"
    assert config.run_id


@pytest.mark.parametrize("argv, message", [
    (["--feeds", "https://a.example/rss"], "--output DIR is required"),
    (["--output", "x"], "at least one --feeds"),
    (["--feeds", "/no/such/file.opml", "--output", "x"], "neither an http(s) URL"),
    (["--feeds", "https://a.example/rss", "--output", "x", "--fetch-threads", "0"],
     "--fetch-threads"),
    (["--feeds", "https://a.example/rss", "--output", "x", "--category-map", "/nope.yaml"],
     "--category-map"),
])
def test_bad_arguments_fail_with_a_clear_message(argv, message):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert message in str(info.value)


def test_cli_reports_bad_arguments_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", "--output", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "at least one --feeds" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "frobnicate"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown command" in proc.stderr
