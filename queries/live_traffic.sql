-- Traffic of a fleet polled over HTTP, per device and minute, from the devices'
-- cumulative interface counters: the source turns them into the bytes and packets moved
-- since the previous poll (a reboot counts as a reset) and fills interval_ms with the
-- time between the two answers, so rates are sums over sums.
-- `edgeflow devices --devices 1000` simulates such a fleet on 127.0.0.1:5000.
CREATE TABLE readings (
    device_id   TEXT,
    ts          TIMESTAMP,
    bytes_in    BIGINT,
    bytes_out   BIGINT,
    packets     BIGINT,
    latency_ms  DOUBLE,
    interval_ms BIGINT
) WITH (
    connector = 'http_poll',
    url = 'http://127.0.0.1:5000/device/{id}',
    ids = '0..999',
    interval = '10s',
    timeout = '2s',
    concurrency = '64',
    counters = 'bytes_in,bytes_out,packets',
    event_time = 'ts',
    max_out_of_orderness = '5s',
    idle_timeout = '30s'
);

SELECT device_id, window_start, window_end,
       COUNT(*) AS polls,
       SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out, SUM(packets) AS packets,
       SUM(bytes_in + bytes_out) * 1000 / SUM(interval_ms) AS bytes_per_s,
       AVG(latency_ms) AS avg_latency_ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start, window_end;
