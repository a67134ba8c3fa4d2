-- DuckDB's answer to device_traffic.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s.
SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
       MAX(bytes_in) AS max_bytes_in, AVG(latency_ms) AS avg_latency_ms
FROM tumble_windows(60000, 5000)
GROUP BY device_id, window_start, window_end;
