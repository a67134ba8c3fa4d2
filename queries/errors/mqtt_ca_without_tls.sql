-- error: queries/errors/mqtt_ca_without_tls.sql:3:71: ca_file is for a TLS broker: write the broker as 'mqtts://HOST:PORT'
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:1883', ca_file = 'ca.pem', topic = 'devices/+/traffic', event_time = 'ts');
SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;
