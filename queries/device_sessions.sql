-- Per-device activity sessions: a device's readings less than 20 seconds apart belong to
-- one session, from its first reading to its last reading plus the gap. A device that
-- goes quiet (an outage, a reboot) ends its session; its next reading starts another.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT,
    packets    BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
       MAX(latency_ms) AS max_latency_ms
FROM SESSION(readings, ts, INTERVAL '20' SECOND)
GROUP BY device_id, window_start, window_end;
