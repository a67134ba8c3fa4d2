-- error: queries/errors/top_n_without_limit.sql:12:9: expected WHERE rank <= <n>: how many rows each window keeps
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY moved DESC) AS rank
    FROM (
        SELECT device_id, window_start, window_end, SUM(bytes_in) AS moved
        FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
        GROUP BY device_id, window_start, window_end
    )
) WHERE moved > 3;
