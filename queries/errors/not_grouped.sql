-- error: queries/errors/not_grouped.sql:5:19: column `bytes_in` must appear in GROUP BY or inside an aggregate function
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, bytes_in, window_start
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start;
