-- error: queries/errors/top_n_partition.sql:7:47: a window Top-N ranks within each window: PARTITION BY window_start, window_end
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

-- Ranking across windows would need every window's rows at once.
SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY moved DESC) AS rank
    FROM (
        SELECT device_id, window_start, window_end, SUM(bytes_in) AS moved
        FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
        GROUP BY device_id, window_start, window_end
    )
) WHERE rank <= 3;
