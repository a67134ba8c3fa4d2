-- Traffic per site and minute: each reading's device looked up in the device registry
-- (`registry/devices.csv`, re-read every 30 s when it changes). A window joins the
-- registry version in force when it closes; readings of devices the registry does not
-- list are dropped by the INNER join and counted (`registry ... dropped` in the summary);
-- devices listed without a site yet are left out by HAVING.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT,
    packets    BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

CREATE TABLE devices (
    device_id TEXT,
    site      TEXT,
    zone      TEXT
) WITH (connector = 'file', path = 'registry/devices.csv', reload = '30s');

SELECT d.site, d.zone, window_start, window_end,
       COUNT(*) AS readings,
       SUM(r.bytes_in + r.bytes_out) AS total_bytes,
       AVG(latency_ms) AS avg_latency_ms,
       MAX(latency_ms) AS max_latency_ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r
JOIN devices d ON r.device_id = d.device_id
GROUP BY d.site, d.zone, window_start, window_end
HAVING d.site IS NOT NULL;
