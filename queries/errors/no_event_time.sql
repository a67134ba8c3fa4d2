-- error: queries/errors/no_event_time.sql:2:14: expected WITH (event_time = '<timestamp column>') to say which column is event time
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT);

SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start;
