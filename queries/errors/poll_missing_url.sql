-- error: queries/errors/poll_missing_url.sql:2:14: missing option `url`: expected a URL template such as 'http://10.0.0.{id}/device/{id}'
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_poll', ids = '0..9', event_time = 'ts');
SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;
