-- DuckDB's answer to fleet_per_minute.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s. `8.0` is a DOUBLE in edgeflow, a DECIMAL in
-- DuckDB: cast so the arithmetic is the same.
SELECT window_start, window_end,
       COUNT(*) AS readings,
       SUM(bytes_in + bytes_out) AS total_bytes,
       SUM(packets) AS packets,
       AVG(latency_ms) AS avg_latency_ms,
       MAX(latency_ms) AS max_latency_ms,
       SUM(bytes_in) * 8.0::DOUBLE / 60 AS bits_in_per_second
FROM tumble_windows(60000, 5000)
GROUP BY window_start, window_end;
