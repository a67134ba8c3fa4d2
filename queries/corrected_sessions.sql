-- Per-device activity sessions (a 20 second gap ends one), corrected by readings up to
-- five minutes late: such a reading joins the session it belongs to, and when it fills
-- the silence between two sessions already written, the file they were in is written
-- again with the one session that replaces them (a new revision; the old one leaves the
-- latest view). Later readings go to the late table.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT,
    packets    BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s', allowed_lateness = '5m');

SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out,
       MAX(latency_ms) AS max_latency_ms
FROM SESSION(readings, ts, INTERVAL '20' SECOND)
GROUP BY device_id, window_start, window_end;
