-- DuckDB's answer to corrected_traffic_1m.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s, allowed_lateness 5m.
SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
       MAX(latency_ms) AS max_latency_ms
FROM tumble_windows(60000, 5000, allowed_lateness_ms := 300000)
GROUP BY device_id, window_start, window_end;
