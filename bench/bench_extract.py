"""Extraction quality and time per page: the pipeline's extractor against two other settings.

Reads ``../shared/corpora/extraction-eval/pages.tar.xz`` (or under ``$NEWSBEAM_SHARED``;
exits with a message when missing): trafilatura's own evaluation set, 990 pages (mostly
German and English) and ``evaldata.json``, which gives for each page a few snippets that
the extracted text must contain (``with``) and a few it must not (``without``: menus,
footers, dates, comments). The set has no full gold text, so scoring is the set's own, as
in trafilatura's comparison script: a ``with`` snippet found is a true positive, missing a
false negative; a ``without`` snippet found is a false positive. Counts are pooled over all
pages, then precision, recall and F1 computed once (a page with no output counts all its
``with`` snippets as missed). Whitespace runs are collapsed to one space in both the
snippet and the text before the containment test. The per-page mean F1 is printed beside
it (pages where it is undefined left out).

Configurations, side by side in one process, page by page in turn (so load affects all
alike; only the extraction call is timed):

* ``pipeline``: :func:`transforms.extraction.extract.extract_page` (``include_comments=False``,
  ``with_metadata=True``, text cleaned as stored);
* ``comments``: ``trafilatura.bare_extraction`` with ``include_comments=True`` (the
  library default), otherwise as the pipeline;
* ``precision``: ``bare_extraction`` as the pipeline plus ``favor_precision=True``.

Page bytes are decoded with :func:`transforms.fetching.http.decode_html` and no headers,
as the pipeline does for a response without a charset. Run::

    NEWSBEAM_SHARED=../shared nice .venv/bin/python bench/bench_extract.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tarfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402

from transforms.extraction.extract import extract_page  # noqa: E402
from transforms.fetching.http import decode_html  # noqa: E402

CORPUS = (Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
          / "corpora" / "extraction-eval" / "pages.tar.xz")
"""In ``../shared`` beside the repository, or under ``$NEWSBEAM_SHARED``."""
_SPACE = re.compile(r"\s+")
# The pipeline still asks for a dict; the warning about it would repeat on every page.
warnings.filterwarnings("ignore", message='"as_dict" will be removed', category=DeprecationWarning)


def squeeze(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _bare(**options) -> Callable[[str, str], str]:
    def run(html: str, url: str) -> str:
        try:
            doc = trafilatura.bare_extraction(html, url=url, with_metadata=True,
                                              as_dict=True, **options)
        except Exception:  # as the pipeline: hostile markup yields no text
            return ""
        if doc and not isinstance(doc, dict):
            doc = doc.as_dict()
        text = (doc or {}).get("text")
        return text if isinstance(text, str) else ""
    return run


CONFIGS: dict[str, Callable[[str, str], str]] = {
    "pipeline": lambda html, url: extract_page(html, url).body,
    "comments": _bare(include_comments=True),
    "precision": _bare(include_comments=False, favor_precision=True),
}


@dataclass
class Score:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    empty: int = 0
    page_f1: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def add(self, text: str, want: list[str], avoid: list[str], ms: float) -> None:
        text = squeeze(text)
        if not text:
            self.empty += 1
        tp = sum(squeeze(s) in text for s in want) if text else 0
        fp = sum(squeeze(s) in text for s in avoid) if text else 0
        self.tp, self.fn = self.tp + tp, self.fn + len(want) - tp
        self.fp, self.tn = self.fp + fp, self.tn + len(avoid) - fp
        if tp:
            p, r = tp / (tp + fp), tp / len(want)
            self.page_f1.append(2 * p * r / (p + r))
        elif want:
            self.page_f1.append(0.0)
        self.ms.append(ms)

    def line(self, name: str) -> str:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return (f"  {name:<10} pages {len(self.ms)}, P {p:.3f}, R {r:.3f}, F1 {f1:.3f} "
                f"(per-page mean F1 {statistics.fmean(self.page_f1):.3f}; "
                f"TP {self.tp} FN {self.fn} FP {self.fp} TN {self.tn}; empty {self.empty}); "
                f"ms/page median {statistics.median(self.ms):.1f}, "
                f"mean {statistics.fmean(self.ms):.1f}")


def load(path: Path, limit: int | None) -> tuple[list[tuple[str, str, dict]], list[str]]:
    """(url, decoded HTML, gold item) per page in ``evaldata.json`` order, and missing files.

    A file is looked up under ``cache/`` first, then ``eval/``, as the set's own script does.
    """
    with tarfile.open(path) as tar:  # one pass: seeking back in an xz stream decompresses again
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    gold = json.loads(files["evaldata.json"])
    pages, missing = [], []
    for url, item in gold.items():
        body = files.get(f"cache/{item['file']}") or files.get(f"eval/{item['file']}")
        if body is None:
            missing.append(item["file"])
            continue
        pages.append((url, decode_html(body, {}), item))
        if limit and len(pages) >= limit:
            break
    return pages, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    args = parser.parse_args(argv)
    if not CORPUS.is_file():
        print(f"missing {CORPUS}: set NEWSBEAM_SHARED to the shared corpora directory",
              file=sys.stderr)
        return 2
    pages, missing = load(CORPUS, args.limit)
    print(f"{len(pages)} pages from {CORPUS.name} (trafilatura {trafilatura.__version__}); "
          f"{len(missing)} listed without a file; load average {os.getloadavg()[0]:.2f}")
    for run in CONFIGS.values():  # warm up imports and caches outside the timing
        run(pages[0][1], pages[0][0])
    scores = {name: Score() for name in CONFIGS}
    for i, (url, html, item) in enumerate(pages):
        names = list(CONFIGS)
        names = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        for name in names:
            start = time.perf_counter()
            text = CONFIGS[name](html, url)
            ms = (time.perf_counter() - start) * 1000
            scores[name].add(text, item["with"], item["without"], ms)
    for name, score in scores.items():
        print(score.line(name))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
