-- error: queries/errors/join_registry_in_where.sql:8:9: `site` is a column of the registry `devices`, which is joined when a window closes; WHERE can only use the readings' columns: group by it instead (HAVING can test it)
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
CREATE TABLE devices (device_id TEXT, site TEXT) WITH (connector = 'file', path = '../registry/devices.csv');

-- The registry is joined when a window closes: readings cannot be filtered by it.
SELECT d.site, window_start, SUM(r.bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r JOIN devices d ON r.device_id = d.device_id
WHERE d.site = 'lyon'
GROUP BY d.site, window_start;
