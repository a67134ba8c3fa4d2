-- error: queries/errors/join_ambiguous_column.sql:7:10: `device_id` is a column of both `readings` and `devices`; qualify it, e.g. r.device_id
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
CREATE TABLE devices (device_id TEXT, site TEXT) WITH (connector = 'file', path = '../registry/devices.csv');

SELECT device_id, d.site, window_start, SUM(r.bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r JOIN devices d ON r.device_id = d.device_id
GROUP BY device_id, d.site, window_start;
