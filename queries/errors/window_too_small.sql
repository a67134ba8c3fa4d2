-- error: queries/errors/window_too_small.sql:6:27: window size is 250us, below the minimum of 1ms
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, '250us')
GROUP BY device_id, window_start;
