-- DuckDB's answer to slow_readings_10s.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 10 seconds, max_out_of_orderness 2s. The WHERE filter applies after lateness is
-- decided: filtered-out readings still move the watermark.
SELECT device_id, window_start, window_end,
       COUNT(*) AS slow_readings,
       MAX(latency_ms) AS worst_latency_ms,
       MIN(ts) AS first_slow_at
FROM tumble_windows(10000, 2000)
WHERE latency_ms > 200 AND device_id NOT IN ('dev-000000', 'dev-000001')
GROUP BY device_id, window_start, window_end;
