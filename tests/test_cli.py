"""Argument parsing on its own: bad input gives one clear message, never a traceback."""

import subprocess
import sys

import pytest

from pipelines.ingest import parse_args
from pipelines.preflight import UsageError


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
    assert proc.returncode == 2
    assert "at least one --feeds" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "frobnicate"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def _fails_fast(argv, capsys):
    with pytest.raises(UsageError) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(info.value) in err
    return str(info.value)


def test_unusable_output_fails_before_anything_runs(tmp_path, capsys):
    feeds = ["--feeds", "https://a.example/rss"]
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    assert "is a file, not a folder" in _fails_fast([*feeds, "--output", str(a_file)], capsys)
    assert "is a file" in _fails_fast([*feeds, "--output", str(a_file / "sub")], capsys)
    # /sys refuses new files even to root, where permission bits would not.
    assert "is not writable" in _fails_fast([*feeds, "--output", "/sys/newsbeam-out"], capsys)
    # Missing folders are fine: they are created when the run writes.
    config, _ = parse_args([*feeds, "--output", str(tmp_path / "new" / "deeper")])
    assert config.output.endswith("deeper") and not (tmp_path / "new").exists()
    # Object stores are left to the runner (no credentials are assumed here).
    assert parse_args([*feeds, "--output", "gs://bucket/news"])[0].output == "gs://bucket/news"


def test_unreadable_articles_fail_before_anything_runs(tmp_path, capsys):
    out = ["--output", str(tmp_path / "out")]
    assert "no such file" in _fails_fast(["--articles", str(tmp_path / "no.jsonl"), *out],
                                         capsys)
    assert "is not a file" in _fails_fast(["--articles", str(tmp_path), *out], capsys)
    assert "matches no file" in _fails_fast(["--articles", str(tmp_path / "*.jsonl"), *out],
                                            capsys)
    (tmp_path / "a.jsonl").write_text("{}\n")
    assert parse_args(["--articles", str(tmp_path / "*.jsonl"), *out])[0].articles


def test_feeds_without_a_valid_feed_fail_before_anything_runs(tmp_path, capsys):
    out = ["--output", str(tmp_path / "out")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("feeds: [unclosed")
    message = _fails_fast(["--feeds", str(bad), *out], capsys)
    assert "--feeds gave no valid feed" in message and "invalid YAML" in message
    empty = tmp_path / "feeds.txt"
    empty.write_text("# nothing yet\nnot-a-url\n")
    assert "no valid feed" in _fails_fast(["--feeds", str(empty), *out], capsys)
    opml = tmp_path / "subs.opml"
    opml.write_text("not XML")
    assert "not XML" in _fails_fast(["--feeds", str(opml), *out], capsys)
    # With one valid feed beside it, the broken file is an error record, not a refusal.
    config, _ = parse_args(["--feeds", str(bad), "--feeds", "https://a.example/rss", *out])
    assert [f.url for f in config.subscriptions.feeds] == ["https://a.example/rss"]
    assert [where for where, _ in config.subscriptions.problems] == [str(bad)]


def test_cli_exits_2_with_one_line_before_fetching(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", "--articles",
                           str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING")]
    assert lines == [f"newsbeam ingest: --articles {tmp_path / 'missing.jsonl'}: no such file"]
    assert not (tmp_path / "o").exists()


def test_topic_encoder_option_is_off_by_default_and_reaches_the_config(tmp_path):
    base = ["--feeds", "https://a.example/rss", "--output", str(tmp_path / "out")]
    assert parse_args(base)[0].topic_encoder is False
    assert parse_args([*base, "--topic-encoder"])[0].topic_encoder is True
    from pipelines.watch import parse_watch_args

    assert parse_watch_args([*base, "--topic-encoder"]).ingest.topic_encoder is True


# Written for this test. The Italian text is one the English and German lexicons misread
# (weather words they do not know, "protezione civile" pulls towards crime), so its topic
# shows whether the encoder head took part; the Spanish one both read right.
ITALIAN_WEATHER = (
    "Allerta meteo: piogge intense e vento forte al nord",
    "La protezione civile ha diramato un'allerta arancione per temporali, grandine e raffiche "
    "di vento. Le temperature scenderanno di dieci gradi e sono attese nevicate sulle Alpi "
    "sopra i mille metri nel fine settimana.")
SPANISH_SPORT = (
    "El equipo gana la final de la copa en el último minuto",
    "El delantero marcó de cabeza en el descuento y el equipo levantó la copa ante su afición. "
    "El entrenador celebró el título con los jugadores sobre el césped del estadio, mientras "
    "los aficionados cantaban en las gradas. Es el tercer trofeo de la temporada.")


@pytest.mark.slow
def test_ingest_with_topic_encoder_classifies_a_non_english_article(tmp_path):
    import json

    import pyarrow.dataset as ds

    from pipelines.cli import main
    from transforms.topics.classify import TopicClassifier

    lines = [
        {"url": "https://meteo.example/allerta", "title": ITALIAN_WEATHER[0],
         "text": ITALIAN_WEATHER[1], "published": "2024-11-23T08:00:00Z"},
        {"url": "https://deportes.example/final", "title": SPANISH_SPORT[0],
         "text": SPANISH_SPORT[1], "published": "2024-11-23T09:00:00Z"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                   encoding="utf-8")
    out = tmp_path / "out"
    assert main(["ingest", "--articles", str(src), "--output", str(out),
                 "--topic-encoder"]) == 0
    rows = {r["url"]: r for r in ds.dataset(out / "articles", format="parquet",
                                            partitioning="hive").to_table().to_pylist()}
    assert set(rows) == {x["url"] for x in lines}
    weather = rows["https://meteo.example/allerta"]
    assert (weather["language"], weather["topic"], weather["topic_code"],
            weather["topic_source"]) == ("it", "weather", "medtop:17000000", "classifier")
    assert (out / "articles" / "date=2024-11-23" / "topic=weather").is_dir()
    sport = rows["https://deportes.example/final"]
    assert (sport["language"], sport["topic"], sport["topic_source"]) == (
        "es", "sport", "classifier")
    # The lexicons alone read the Italian text otherwise: the head decided it.
    alone = TopicClassifier(use_encoder=False).classify(*ITALIAN_WEATHER, "it")
    assert alone.best != "weather"


def test_ingest_help_lists_the_pipeline_options():
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--feeds", "--output", "--story-similarity", "--topic-encoder",
                   "--drop-echoes"):
        assert option in proc.stdout
    assert "multilingual" in proc.stdout and "--runner" in proc.stdout


def test_version_names_the_installed_distribution():
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"newsbeam {version('newsbeam')}"


def test_ingest_run_leaves_the_streaming_mode_to_the_cli(tmp_path):
    from pipelines.ingest import run

    with pytest.raises(UsageError, match="pipelines.streaming.run"):
        run(["--feeds", "https://a.example/rss", "--output", str(tmp_path), "--streaming"])
    assert not any(tmp_path.iterdir())
