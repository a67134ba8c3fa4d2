-- error: queries/errors/secret_in_query.sql:4:17: secrets do not belong in query files: name the environment variable holding the token with bearer_token_env
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_poll', url = 'https://10.0.0.{id}/device/{id}', ids = '1..250', event_time = 'ts',
      headers = 'Authorization: Bearer 12345; X-Site: lab');
SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;
