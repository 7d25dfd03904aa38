"""The generic top-level names (pipelines, transforms, schemas) must come from one install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_cli(cwd: Path) -> subprocess.CompletedProcess:
    # ``python -m`` style: the working directory comes first on sys.path.
    return subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, ''); "
                           "import pipelines.cli; print('imported')"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_folder_named_like_one_of_our_packages_is_refused_clearly(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "__init__.py").write_text("")
    done = _import_cli(tmp_path)
    assert done.returncode != 0 and "imported" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: newsbeam's package 'schemas'"), last
    assert str(tmp_path / "schemas") in last and "own virtual environment" in last


def test_our_packages_import_together(tmp_path):
    done = _import_cli(tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["imported"], done.stderr[-2000:]
