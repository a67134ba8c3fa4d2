-- error: queries/errors/join_undeclared_registry.sql:5:55: a JOIN reads a device registry: declare it with CREATE TABLE <name> (...) WITH (connector = 'file', path = '<registry>.csv')
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');

SELECT d.site, window_start, SUM(r.bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r JOIN devices d ON r.device_id = d.device_id
GROUP BY d.site, window_start;
