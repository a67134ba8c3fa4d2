"""The canonical query (per-device one-minute windows) in DuckDB on one thread, batch
over the same JSON lines file edgeflow reads: the reference row of benches/README.md.

usage: python duckdb_canonical.py READINGS.jsonl [RUNS]
"""

import sys
import time

import duckdb

path = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
lines = sum(1 for _ in open(path, "rb"))
con = duckdb.connect()
con.execute("SET threads = 1")
query = f"""
SELECT device_id, time_bucket(INTERVAL '1 minute', to_timestamp(ts / 1000.0)) AS window_start,
       count(*), sum(bytes_in), sum(bytes_out), max(bytes_in), avg(latency_ms)
FROM read_json('{path}', format = 'newline_delimited',
               columns = {{device_id: 'VARCHAR', ts: 'BIGINT', bytes_in: 'BIGINT',
                          bytes_out: 'BIGINT', packets: 'BIGINT', latency_ms: 'DOUBLE'}})
GROUP BY ALL
"""
best = None
for _ in range(runs):
    start = time.perf_counter()
    rows = len(con.execute(query).fetchall())
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
print(f"duckdb {duckdb.__version__}, 1 thread: {rows} rows, best of {runs}: {best:.3f} s, {lines / best:,.0f} readings/s")
