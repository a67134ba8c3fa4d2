-- Devices that moved more than 4 MB in any five-minute window, re-evaluated every minute.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT device_id, window_start, window_end,
       SUM(bytes_in) + SUM(bytes_out) AS total_bytes,
       COUNT(*) AS readings
FROM HOP(readings, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
GROUP BY device_id, window_start, window_end
HAVING SUM(bytes_in) + SUM(bytes_out) > 4000000;
