"""Packaging for distributed runners: what ``--setup_file``, the containers and the Flex
Template ship to workers.

* The sdist is built exactly as Beam builds it for ``--setup_file ./setup.py``
  (``Stager._build_setup_package``) from a copy of the source tree, and the wheel with
  ``pip wheel``; both must hold every module and data file of the three packages.
* The sdist is installed the way a worker installs the staged package, into a folder
  outside the source tree, and a fresh interpreter imports the pipeline and loads the
  package data from there.
* The container files are checked against the Beam and Python versions of this
  environment (Docker itself is not available here, so the images are not built).
* The Flex Template entry point runs end to end on the DirectRunner in its own process,
  and every parameter of its metadata maps to a real pipeline option.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.stager import Stager

from tests.conftest import article_html, rss

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipelines", "transforms", "schemas")
FLEX_DIR = ROOT / "deploy" / "flex_template"
PY_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


def _shipped_sources() -> set[str]:
    """Every file of the three packages that a worker may need, relative to the root."""
    files = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT)
            if (path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc"
                    and not any(p.startswith(".") for p in rel.parts)):
                files.add(rel.as_posix())
    return files


def _copy_tree(dest: Path) -> Path:
    """The files a source checkout holds for packaging (no venv, caches or outputs)."""
    dest.mkdir()
    for name in ("setup.py", "pyproject.toml", "setup.cfg", "MANIFEST.in", "README.md",
                 "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    return dest


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The package Beam stages for ``--setup_file``, built the way Beam builds it."""
    work = tmp_path_factory.mktemp("sdist")
    src = _copy_tree(work / "src")
    out = work / "dist"
    out.mkdir()
    return Path(Stager._build_setup_package(str(src / "setup.py"), str(out)))  # noqa: SLF001


def test_shipped_sources_include_the_data_files():
    files = _shipped_sources()
    assert "transforms/data/categories.yaml" in files
    assert "pipelines/ingest.py" in files and "schemas/records.py" in files
    if (ROOT / "pipelines" / "demo" / "site").is_dir():
        assert any(f.startswith("pipelines/demo/site/") for f in files)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_setup_file_sdist_holds_every_module_and_data_file(sdist):
    assert sdist.name == "newsbeam-0.1.0.tar.gz"
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers()
                   if m.isfile() and "/" in m.name}
    missing = _shipped_sources() - members
    assert not missing, f"not in the staged package: {sorted(missing)[:20]}"
    assert "setup.py" in members


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_holds_every_module_and_data_file(tmp_path):
    src = _copy_tree(tmp_path / "src")
    out = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("newsbeam-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
    missing = _shipped_sources() - members
    assert not missing, f"not in the wheel: {sorted(missing)[:20]}"
    assert any(m.endswith("entry_points.txt") for m in members)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_staged_package_installs_and_works_outside_the_source_tree(sdist, tmp_path):
    target = tmp_path / "site-packages"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "--target", str(target), str(sdist)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    script = (
        "import sys, pipelines, pipelines.ingest\n"
        "from pipelines.demo import SITE_DIR\n"
        "from transforms.topics.assign import load_category_map\n"
        f"assert pipelines.__file__.startswith({str(target)!r}), pipelines.__file__\n"
        "mapping = load_category_map()\n"
        "print(len(mapping), sum(1 for p in SITE_DIR.rglob('*') if p.is_file()))\n")
    env = {"PYTHONPATH": str(target), "PATH": str(Path(sys.executable).parent)}
    ran = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    categories, site_files = (int(v) for v in ran.stdout.split())
    assert categories > 10
    source_site = ROOT / "pipelines" / "demo" / "site"
    assert site_files == sum(1 for p in source_site.rglob("*") if p.is_file())


# -- containers ----------------------------------------------------------------------------

def _dockerfile(path: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """FROM images, ARG defaults and COPY sources of a Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    froms, args, copies = [], {}, []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            froms.append(words[1])
        elif words[0] == "ARG" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args[name] = value
        elif words[0] == "COPY" and not words[1].startswith("--from"):
            copies.extend(words[1:-1])
    return froms, args, copies


def test_worker_dockerfile_matches_this_beam_and_python():
    froms, args, copies = _dockerfile(ROOT / "Dockerfile")
    assert froms == [f"apache/beam_python{PY_TAG}_sdk:{beam.__version__}"]
    assert args["BEAM_VERSION"] == beam.__version__
    assert {"setup.py", *PACKAGES} <= set(copies)


def test_flex_template_dockerfile_matches_this_beam_and_python():
    froms, args, copies = _dockerfile(FLEX_DIR / "Dockerfile")
    py = PY_TAG.replace(".", "")
    assert froms == [f"gcr.io/dataflow-templates-base/python{py}-template-launcher-base:latest"]
    assert args["BEAM_VERSION"] == beam.__version__
    assert {"setup.py", *PACKAGES, "deploy/flex_template/main.py"} <= set(copies)
    text = (FLEX_DIR / "Dockerfile").read_text(encoding="utf-8")
    assert 'FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/main.py"' in text
    assert 'FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"' in text


# -- the Flex Template -----------------------------------------------------------------------

def _flex_main():
    spec = importlib.util.spec_from_file_location("newsbeam_flex_main", FLEX_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flex_args_translates_template_parameters():
    flex = _flex_main()
    assert flex.flex_args([
        "--feeds=https://example.org/rss", "--fetch_threads=4", "--max_page_bytes=2048",
        "--allow_private_network=true", "--run_id=r1", "--sdk_container_image=img:1",
        "--max_num_workers=3"]) == [
        "--feeds=https://example.org/rss", "--fetch-threads=4", "--max-page-bytes=2048",
        "--allow-private-network", "--run-id=r1", "--sdk_container_image=img:1",
        "--max_num_workers=3"]
    assert flex.flex_args(["--allow_private_network=false", "--output=gs://b/o"]) == [
        "--output=gs://b/o"]
    assert flex.flex_args(["--streaming=true", "--poll_interval=60",
                           "--forget_after_days=7"]) == [
        "--streaming", "--poll-interval=60", "--forget-after-days=7"]
    # Hyphenated spellings from a shell pass through unchanged.
    assert flex.flex_args(["--fetch-threads", "2", "--allow-private-network"]) == [
        "--fetch-threads", "2", "--allow-private-network"]
    with pytest.raises(ValueError, match="true or false"):
        flex.flex_args(["--allow_private_network=maybe"])


def test_flex_metadata_parameters_are_real_options():
    flex = _flex_main()
    metadata = json.loads((FLEX_DIR / "metadata.json").read_text(encoding="utf-8"))
    ingest_options = {o for a in flex._ingest_parser()._actions for o in a.option_strings}
    beam_options = set(PipelineOptions([]).get_all_options())
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    for param in metadata["parameters"]:
        name = param["name"]
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name), name
        assert param["label"] and param["helpText"], name
        (translated,) = flex.flex_args([f"--{name}=true"])
        option = translated.split("=", 1)[0]
        assert option in ingest_options or name in beam_options, f"unknown parameter {name}"
        for regex in param.get("regexes", []):
            re.compile(regex)
    required = {p["name"] for p in metadata["parameters"] if not p.get("isOptional")}
    assert required == {"feeds", "output"}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_flex_entry_point_runs_in_its_own_process(pages_server, tmp_path, mode):
    paragraphs = [
        "The lighthouse on Gull Point was relit on Saturday after a restoration that took "
        "two summers and most of the money raised by the island's historical society.",
        "Volunteers replaced the lantern glass and rebuilt the iron stair, and the keeper's "
        "cottage will open as a small museum in the spring, with free entry for residents.",
    ]
    link = pages_server.add("/news/lighthouse.html",
                            article_html("Gull Point lighthouse relit", paragraphs))
    feed = pages_server.add("/feed.xml", rss("Island Post", [{
        "title": "Gull Point lighthouse relit", "link": link, "guid": link,
        "pubDate": "Sat, 23 Nov 2024 10:00:00 GMT", "category": ["Culture"]}]),
        content_type="application/rss+xml")
    out = tmp_path / "out"
    # Template-style arguments, exactly as the launcher passes them.
    # The streaming run is bounded (stop_after) so that the local runner ends and publishes.
    extra = (["--streaming=true", "--poll_interval=1", "--stop_after=2"]
             if mode == "streaming" else [])
    ran = subprocess.run(
        [sys.executable, str(FLEX_DIR / "main.py"), f"--feeds={feed}", f"--output={out}",
         "--allow_private_network=true", "--fetch_threads=2", "--run_id=flex1",
         "--runner=DirectRunner", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert ran.returncode == 0, ran.stderr[-3000:]
    files = sorted(out.glob("articles/**/part-flex1-*.parquet"))
    assert len(files) == 1, ran.stderr[-3000:]
    rows = pq.read_table(files[0], columns=["url", "title"]).to_pylist()
    assert rows == [{"url": link, "title": "Gull Point lighthouse relit"}]
    assert files[0].parent.parent.name == "date=2024-11-23"
    if mode == "streaming":
        # Polled more than once, but the article was written once.
        assert pages_server.count("/feed.xml") >= 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_builds_without_warnings_and_with_full_metadata(tmp_path):
    src = _copy_tree(tmp_path / "src")
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out), str(src)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "absent from the `packages` configuration" not in log
    assert "Warning" not in log.replace("byte-compiling is disabled", "")
    (wheel,) = out.glob("newsbeam-0.1.0-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read("newsbeam-0.1.0.dist-info/METADATA").decode()
        members = set(zf.namelist())
    assert "newsbeam-0.1.0.dist-info/licenses/LICENSE" in members
    for field in ("License", "Project-URL: Source", "Description-Content-Type: text/markdown",
                  "Provides-Extra: analytics", "Provides-Extra: gcp", "Provides-Extra: aws"):
        assert field in metadata, field
    assert "# newsbeam" in metadata  # the README is the long description
