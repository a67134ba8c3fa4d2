"""The canonical query (per-device one-minute windows) in Polars on one thread, batch over
the same JSON lines file edgeflow reads: the reference row of benches/README.md.

usage: POLARS_MAX_THREADS=1 python polars_canonical.py READINGS.jsonl [RUNS]
"""

import os
import sys
import time

os.environ.setdefault("POLARS_MAX_THREADS", "1")
import polars as pl  # noqa: E402  (the thread count must be set before the import)

path = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
readings = sum(1 for _ in open(path, "rb"))
schema = {
    "device_id": pl.Utf8,
    "ts": pl.Int64,
    "bytes_in": pl.Int64,
    "bytes_out": pl.Int64,
    "packets": pl.Int64,
    "latency_ms": pl.Float64,
}
best = None
for _ in range(runs):
    start = time.perf_counter()
    frame = (
        pl.scan_ndjson(path, schema=schema)
        .with_columns(window_start=(pl.col("ts") // 60_000) * 60_000)
        .group_by("device_id", "window_start")
        .agg(
            pl.len(),
            pl.col("bytes_in").sum(),
            pl.col("bytes_out").sum(),
            pl.col("bytes_in").max().alias("max_bytes_in"),
            pl.col("latency_ms").mean(),
        )
        .collect()
    )
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
print(f"polars {pl.__version__}, {pl.thread_pool_size()} thread(s): {frame.height} rows, best of {runs}: {best:.3f} s, {readings / best:,.0f} readings/s")
