-- error: queries/errors/unknown_column.sql:5:23: unknown column `bytes`; readings has: device_id, ts, bytes_in
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT device_id, SUM(bytes) AS bytes, window_start
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start;
