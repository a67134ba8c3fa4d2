-- DuckDB's answer to top_talkers_1m.sql (the test's oracle; see tests/it/py/duckdb_oracle.py).
-- TUMBLE 1 minute, max_out_of_orderness 5s; ties ranked by device_id, as edgeflow ranks them.
SELECT * FROM (
    SELECT *,
           row_number() OVER (PARTITION BY window_start, window_end
                              ORDER BY moved DESC, device_id ASC) AS rank
    FROM (
        SELECT device_id, window_start, window_end,
               SUM(bytes_in) + SUM(bytes_out) AS moved,
               COUNT(*) AS readings
        FROM tumble_windows(60000, 5000)
        GROUP BY device_id, window_start, window_end
    )
) WHERE rank <= 5;
