-- error: queries/errors/join_right.sql:7:61: only INNER and LEFT joins of readings with a registry are supported
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
CREATE TABLE devices (device_id TEXT, site TEXT) WITH (connector = 'file', path = '../registry/devices.csv');

-- A RIGHT join would make rows for devices without readings: not a windowed aggregate.
SELECT d.site, window_start, SUM(r.bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r RIGHT JOIN devices d ON r.device_id = d.device_id
GROUP BY d.site, window_start;
