-- error: queries/errors/poll_unknown_option.sql:4:74: unknown option `intervall` for connector 'http_poll'; expected one of: allowed_lateness, bearer_token_env, ca_file, concurrency, connector, counter_bits, counters, devices, event_time, headers, idle_timeout, ids, interval, max_ahead_of_clock, max_body, max_future_skew, max_out_of_orderness, timeout, timestamp, url
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_poll', url = 'http://127.0.0.1:5000/device/{id}', ids = '0..9',
      event_time = 'ts', max_out_of_orderness = '5s', concurrency = '8', intervall = '10s');
SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;
