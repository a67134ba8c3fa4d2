-- How steady each device's latency is per minute: spread, and where the minute began
-- and ended (first and last reading by event time, not by arrival).
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT device_id, window_start, window_end,
       COUNT(*) AS readings,
       STDDEV(latency_ms) AS latency_stddev_ms,
       VAR_POP(bytes_in) AS bytes_in_var_pop,
       FIRST_VALUE(latency_ms) AS first_latency_ms,
       LAST_VALUE(latency_ms) AS last_latency_ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start, window_end
HAVING STDDEV(latency_ms) > 5;
