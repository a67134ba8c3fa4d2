-- error: queries/errors/session_without_gap.sql:6:6: expected 3 arguments: SESSION(readings, <event time column>, <gap>)
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, window_start, window_end, SUM(bytes_in) AS bytes_in
FROM SESSION(readings, ts)
GROUP BY device_id, window_start, window_end;
