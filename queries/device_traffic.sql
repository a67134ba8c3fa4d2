-- Per-device traffic in one-minute tumbling windows: the canonical edgeflow query.
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
       MAX(bytes_in) AS max_bytes_in, AVG(latency_ms) AS avg_latency_ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start, window_end;
