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
    from transforms.classify import TopicClassifier

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
