-- error: queries/errors/join_session.sql:6:70: a registry join groups windows by registry columns when they close; SESSION windows are per key: join over TUMBLE or HOP
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
CREATE TABLE devices (device_id TEXT, site TEXT) WITH (connector = 'file', path = '../registry/devices.csv');

SELECT d.site, window_start, window_end, SUM(r.bytes_in) AS bytes_in
FROM SESSION(readings, ts, INTERVAL '30' SECOND) r JOIN devices d ON r.device_id = d.device_id
GROUP BY d.site, window_start, window_end;
