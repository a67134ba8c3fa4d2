"""Answers an edgeflow query with DuckDB: the independent oracle of the query-file tests.

Usage: duckdb_oracle.py <readings.jsonl> <query.duckdb.sql>

The readings are JSON lines as `edgeflow gen` writes them (`ts` in epoch milliseconds).
The query runs over:

* `readings`: every reading with its declared columns (`ts` as a UTC TIMESTAMP), its
  place in the input `line` (0, 1, ... in file order) and `ts_ms` (epoch milliseconds);
* `hop_windows(slide_ms, size_ms, max_out_of_orderness_ms, allowed_lateness_ms := 0)`:
  each reading once per window `[k * slide, k * slide + size)` that holds its event time
  and that it is not late for, with `window_start` and `window_end` (UTC TIMESTAMPs).
  Late, as the README defines it: the window's end plus the allowed lateness is at or
  before the watermark in force where the reading appears, the watermark being the
  largest event time of all earlier lines minus the allowed out-of-orderness (none
  before the first line); a reading within the allowance counts in the window's latest
  revision;
* `tumble_windows(size_ms, max_out_of_orderness_ms, allowed_lateness_ms := 0)`:
  `hop_windows` with slide = size.
* `session_windows(gap_ms, max_out_of_orderness_ms, allowed_lateness_ms := 0)`: each
  reading that is not late (late, as the README defines it for SESSION: the end of its
  gap-sized pane `[k * gap, (k + 1) * gap)` plus the allowed lateness is at or before
  the watermark where it appears), with its
  device's session as `window_start` (first reading) and `window_end` (last reading plus
  the gap); a device's readings, by event time, start a new session wherever they are a
  gap or more apart.

Prints one JSON object: the result's column names and DuckDB types and its rows, with
timestamps as epoch microseconds and integers as JSON integers.
"""
import datetime
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.json as pj

readings_path, query_path = sys.argv[1], sys.argv[2]

schema = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", pa.int64()),
        ("bytes_in", pa.int64()),
        ("bytes_out", pa.int64()),
        ("packets", pa.int64()),
        ("latency_ms", pa.float64()),
    ]
)
# pyarrow keeps the file's line order, so the line number is exact (a DuckDB scan without
# ORDER BY promises no order to row_number()).
table = pj.read_json(readings_path, parse_options=pj.ParseOptions(explicit_schema=schema))
table = table.append_column("line", pa.array(range(table.num_rows), pa.int64()))

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.register("raw_readings", table)
con.execute(
    """
    CREATE VIEW readings AS
    SELECT device_id, epoch_ms(ts) AS ts, bytes_in, bytes_out, packets, latency_ms,
           line, ts AS ts_ms
    FROM raw_readings
    """
)
# Integer division rounding down (DuckDB's `//` truncates toward zero).
con.execute("CREATE MACRO floor_div(a, b) AS (a - ((a % b) + b) % b) // b")
con.execute(
    """
    CREATE MACRO hop_windows(slide_ms, size_ms, max_out_of_orderness_ms,
                             allowed_lateness_ms := 0) AS TABLE
    WITH stamped AS (
        SELECT *,
               max(ts_ms) OVER (ORDER BY line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   - max_out_of_orderness_ms AS watermark_ms
        FROM readings
    ),
    assigned AS (
        SELECT *,
               unnest(range(floor_div(ts_ms - size_ms, slide_ms) + 1,
                            floor_div(ts_ms, slide_ms) + 1)) * slide_ms AS start_ms
        FROM stamped
    )
    SELECT * EXCLUDE (start_ms, watermark_ms),
           epoch_ms(start_ms) AS window_start,
           epoch_ms(start_ms + size_ms) AS window_end
    FROM assigned
    WHERE watermark_ms IS NULL OR start_ms + size_ms + allowed_lateness_ms > watermark_ms
    """
)
con.execute(
    """
    CREATE MACRO tumble_windows(size_ms, max_out_of_orderness_ms,
                                allowed_lateness_ms := 0) AS TABLE
    SELECT * FROM hop_windows(size_ms, size_ms, max_out_of_orderness_ms,
                              allowed_lateness_ms := allowed_lateness_ms)
    """
)

con.execute(
    """
    CREATE MACRO session_windows(gap_ms, max_out_of_orderness_ms,
                                 allowed_lateness_ms := 0) AS TABLE
    WITH stamped AS (
        SELECT *,
               max(ts_ms) OVER (ORDER BY line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   - max_out_of_orderness_ms AS watermark_ms
        FROM readings
    ),
    on_time AS (
        SELECT * FROM stamped
        WHERE watermark_ms IS NULL
           OR floor_div(ts_ms, gap_ms) * gap_ms + gap_ms + allowed_lateness_ms > watermark_ms
    ),
    marked AS (
        SELECT *,
               CASE WHEN ts_ms - lag(ts_ms) OVER (PARTITION BY device_id ORDER BY ts_ms, line)
                         >= gap_ms THEN 1 ELSE 0 END AS breaks
        FROM on_time
    ),
    numbered AS (
        SELECT *,
               sum(breaks) OVER (PARTITION BY device_id ORDER BY ts_ms, line
                                 ROWS UNBOUNDED PRECEDING) AS session
        FROM marked
    ),
    bounded AS (
        SELECT *,
               min(ts_ms) OVER (PARTITION BY device_id, session) AS first_ms,
               max(ts_ms) OVER (PARTITION BY device_id, session) AS last_ms
        FROM numbered
    )
    SELECT * EXCLUDE (watermark_ms, breaks, session, first_ms, last_ms),
           epoch_ms(first_ms) AS window_start,
           epoch_ms(last_ms + gap_ms) AS window_end
    FROM bounded
    """
)

with open(query_path) as f:
    query = f.read()
result = con.execute(query)
columns = [{"name": d[0], "type": str(d[1])} for d in result.description]


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        delta = v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return v


rows = [[plain(v) for v in r] for r in result.fetchall()]
print(json.dumps({"columns": columns, "rows": rows}))
