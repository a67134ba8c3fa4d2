-- Traffic per device and minute, corrected for stragglers: a reading up to five minutes
-- after its minute closed rewrites that minute's file as a new revision (the old one
-- moves to corrected_traffic_1m_revisions/); a later one goes to the late table.
-- State for each minute is kept until the allowance passes: six minutes of windows.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s', allowed_lateness = '5m');

SELECT device_id, window_start, window_end,
       COUNT(*) AS readings,
       SUM(bytes_in) AS bytes_in,
       SUM(bytes_out) AS bytes_out,
       MAX(latency_ms) AS max_latency_ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start, window_end;
