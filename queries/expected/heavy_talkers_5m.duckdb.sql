-- DuckDB's answer to heavy_talkers_5m.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- HOP slide 1 minute, size 5 minutes, max_out_of_orderness 5s.
SELECT device_id, window_start, window_end,
       SUM(bytes_in) + SUM(bytes_out) AS total_bytes,
       COUNT(*) AS readings
FROM hop_windows(60000, 300000, 5000)
GROUP BY device_id, window_start, window_end
HAVING SUM(bytes_in) + SUM(bytes_out) > 4000000;
