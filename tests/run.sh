#!/usr/bin/env bash
# The one test command: provisions what the tests need on a fresh machine, then runs
# every test. Python packages (pyarrow, duckdb, polars to read outputs independently;
# moto as the S3-compatible server), pinned in tests/requirements.txt, go into
# target/test-venv; the tests start their own
# servers from there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${EDGEFLOW_VENV:-target/test-venv}"
# Exact versions (tests/requirements.txt); the venv is rebuilt when the pins change.
requirements=tests/requirements.txt
stamp="$venv/.edgeflow-requirements"
if ! cmp -s "$requirements" "$stamp" \
    || ! "$venv/bin/python" -c 'import pyarrow, duckdb, polars, moto, boto3' 2>/dev/null; then
    echo "tests/run.sh: creating $venv from $requirements" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
# mosquitto: the MQTT broker and independent subscriber of the device simulator's tests;
# chromium and chromedriver: the real browser that drives the node's status page.
missing=()
command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null \
    || missing+=(mosquitto mosquitto-clients)
command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    || missing+=(chromium chromium-driver)
if ((${#missing[@]})); then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export EDGEFLOW_PYTHON="$PWD/$venv/bin/python"
export EDGEFLOW_MOTO="$PWD/$venv/bin/moto_server"

cargo test --all-targets "$@"
# The slim build (no SQL over the outputs, for boxes that only collect and sync) must
# keep compiling; a check, not a second build. Skipped when a filter picks tests.
if (($# == 0)); then
    cargo check --bin edgeflow --no-default-features
fi
