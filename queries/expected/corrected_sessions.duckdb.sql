-- DuckDB's answer to corrected_sessions.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- SESSION gap 20 s, max_out_of_orderness 5s, allowed_lateness 5m.
SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
       MAX(latency_ms) AS max_latency_ms
FROM session_windows(20000, 5000, allowed_lateness_ms := 300000)
GROUP BY device_id, window_start, window_end;
