-- error: queries/errors/join_type_mismatch.sql:6:70: a join compares TEXT or BIGINT columns of one type; `readings.device_id` is TEXT and `devices.device_id` is BIGINT
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
CREATE TABLE devices (device_id BIGINT, site TEXT) WITH (connector = 'file', path = '../registry/devices.csv');

SELECT d.site, window_start, SUM(r.bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r JOIN devices d ON r.device_id = d.device_id
GROUP BY d.site, window_start;
