-- DuckDB's answer to site_traffic_1m.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s, each reading joined with the registry. The
-- registry does not change while the test runs, so joining each reading is the same as
-- joining each window as it closes. An empty field is NULL in both.
SELECT d.site, d.zone, window_start, window_end,
       COUNT(*) AS readings,
       SUM(r.bytes_in + r.bytes_out) AS total_bytes,
       AVG(r.latency_ms) AS avg_latency_ms,
       MAX(r.latency_ms) AS max_latency_ms
FROM tumble_windows(60000, 5000) r
JOIN read_csv('queries/registry/devices.csv', header = true, all_varchar = true) d
  ON r.device_id = d.device_id
GROUP BY d.site, d.zone, window_start, window_end
HAVING d.site IS NOT NULL;
