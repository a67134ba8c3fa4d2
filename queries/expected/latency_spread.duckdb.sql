-- DuckDB's answer to latency_spread.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s. FIRST_VALUE/LAST_VALUE go by event time, ties
-- by value: arg_min/arg_max over (ts, value).
SELECT device_id, window_start, window_end,
       COUNT(*) AS readings,
       stddev_samp(latency_ms) AS latency_stddev_ms,
       var_pop(bytes_in) AS bytes_in_var_pop,
       arg_min(latency_ms, (ts, latency_ms)) AS first_latency_ms,
       arg_max(latency_ms, (ts, latency_ms)) AS last_latency_ms
FROM tumble_windows(60000, 5000)
GROUP BY device_id, window_start, window_end
HAVING stddev_samp(latency_ms) > 5;
