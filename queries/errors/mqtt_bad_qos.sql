-- error: queries/errors/mqtt_bad_qos.sql:3:96: expected qos = '0' or '1', found '2'
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:1883', topic = 'devices/+/traffic', qos = '2', event_time = 'ts');
SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;
