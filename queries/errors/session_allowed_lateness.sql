-- error: queries/errors/session_allowed_lateness.sql:3:30: allowed_lateness is not supported with SESSION windows yet (a correction could merge sessions already written); late readings of a SESSION query go to the late table
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts', allowed_lateness = '2m');

SELECT device_id, window_start, window_end, SUM(bytes_in) AS bytes_in
FROM SESSION(readings, ts, INTERVAL '30' SECOND)
GROUP BY device_id, window_start, window_end;
