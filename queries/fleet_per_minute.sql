-- Whole-fleet totals per minute: no key besides the window.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT,
    packets    BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT window_start, window_end,
       COUNT(*) AS readings,
       SUM(bytes_in + bytes_out) AS total_bytes,
       SUM(packets) AS packets,
       AVG(latency_ms) AS avg_latency_ms,
       MAX(latency_ms) AS max_latency_ms,
       SUM(bytes_in) * 8.0 / 60 AS bits_in_per_second
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY window_start, window_end;
