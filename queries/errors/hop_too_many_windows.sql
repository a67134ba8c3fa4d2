-- error: queries/errors/hop_too_many_windows.sql:6:54: a window size of 1d every 1s puts each reading in 86400 windows; at most 100 are allowed
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, window_start, COUNT(*) AS n
FROM HOP(readings, ts, INTERVAL '1' SECOND, INTERVAL '1' DAY)
GROUP BY device_id, window_start;
