#!/usr/bin/env bash
# Builds the local Beam runners that the `runners` tests and bench/bench_runners.py use, into
# a cache in the checkout (.runners/ by default; RUNNERS_DIR overrides it). Idempotent: a
# runner already built at the pinned version is left alone, so running it again is cheap.
#
#   deploy/local-runners.sh            build Prism (needs Go 1.26+; fetched by module name
#                                       through the Go module proxy, built from source)
#   deploy/local-runners.sh --check    print what is built, build nothing; exit 1 if absent
#   deploy/local-runners.sh --java     also try the Flink and Spark job-server jars from
#                                       Maven Central (see README "Runner matrix": the
#                                       registry does not serve them at the pinned versions)
#
# Versions are pinned here and nowhere else. Prism must be the Beam release of the Python
# SDK (setup.py pins apache-beam 2.77.x): Prism speaks Beam's portable job API of that
# release.
set -euo pipefail

BEAM_VERSION=2.77.0
PRISM_MODULE=github.com/apache/beam/sdks/v2/go/cmd/prism
# Java job servers (tried with --java): Beam's jars on Maven Central lag the PyPI release.
JAVA_BEAM_VERSION=2.73.0
FLINK_JOB_SERVER=org.apache.beam:beam-runners-flink-1.19-job-server:${JAVA_BEAM_VERSION}
SPARK_JOB_SERVER=org.apache.beam:beam-runners-spark-3-job-server:${JAVA_BEAM_VERSION}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNNERS_DIR="${RUNNERS_DIR:-$ROOT/.runners}"
BIN="$RUNNERS_DIR/bin"
PRISM="$BIN/prism"
PRISM_STAMP="$RUNNERS_DIR/prism.version"

# Go's official installs live in /usr/local/go, which a non-login shell may not have on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi

log() { printf 'local-runners: %s\n' "$*" >&2; }

prism_ready() {
  [[ -x "$PRISM" && -f "$PRISM_STAMP" && "$(cat "$PRISM_STAMP")" == "v$BEAM_VERSION" ]]
}

build_prism() {
  if prism_ready; then
    log "prism v$BEAM_VERSION already built: $PRISM"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "go is not installed; Prism is built from source with Go (Beam $BEAM_VERSION's"
    log "module needs Go 1.26 or newer; Debian's golang-go is older)"
    return 1
  fi
  mkdir -p "$BIN"
  log "building prism v$BEAM_VERSION with $(go version | cut -d' ' -f3) (first time: a few minutes)"
  # GOPATH under the cache keeps the module downloads out of the user's home; -modcacherw
  # lets `rm -rf .runners` remove them. The build cache stays Go's default (shared, safe).
  GOPATH="$RUNNERS_DIR/go" GOBIN="$BIN" GOFLAGS="-modcacherw" GOTOOLCHAIN=local \
    nice go install "$PRISM_MODULE@v$BEAM_VERSION"
  # The sources (about 870 MB of modules) are not needed once the binary is built.
  GOPATH="$RUNNERS_DIR/go" go clean -modcache
  printf 'v%s\n' "$BEAM_VERSION" > "$PRISM_STAMP.tmp"
  mv "$PRISM_STAMP.tmp" "$PRISM_STAMP"
  log "prism built: $PRISM"
}

fetch_jar() {  # group:artifact:version -> copies the jar into $RUNNERS_DIR/jars, or fails
  local coords="$1" jar
  jar="$RUNNERS_DIR/jars/$(cut -d: -f2 <<<"$coords")-$(cut -d: -f3 <<<"$coords").jar"
  if [[ -f "$jar" ]]; then
    log "already fetched: $jar"
    return 0
  fi
  if ! command -v mvn >/dev/null 2>&1; then
    log "mvn is not installed; cannot fetch $coords"
    return 1
  fi
  mkdir -p "$RUNNERS_DIR/jars"
  if mvn -B -q dependency:copy -Dmaven.repo.local="$RUNNERS_DIR/m2" -Dartifact="$coords" \
      -DoutputDirectory="$RUNNERS_DIR/jars" >"$RUNNERS_DIR/mvn.log" 2>&1; then
    log "fetched $coords"
  else
    log "could not fetch $coords: $(grep -m1 -o 'Could not find artifact [^ ]*\|was not found in [^ ]*' \
      "$RUNNERS_DIR/mvn.log" || echo 'see '"$RUNNERS_DIR/mvn.log")"
    return 1
  fi
}

case "${1:-}" in
  --check)
    if prism_ready; then echo "prism v$BEAM_VERSION: $PRISM"; else echo "prism: not built"; exit 1; fi
    ;;
  --java)
    build_prism
    status=0
    fetch_jar "$FLINK_JOB_SERVER" || status=1
    fetch_jar "$SPARK_JOB_SERVER" || status=1
    exit "$status"
    ;;
  "")
    build_prism
    ;;
  *)
    echo "usage: $0 [--check | --java]" >&2
    exit 2
    ;;
esac
