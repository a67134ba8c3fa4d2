-- error: queries/errors/reserved_revision.sql:5:31: `revision` is the column edgeflow adds to number a window's revisions; give this output another alias
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (event_time = 'ts');

SELECT device_id, COUNT(*) AS revision
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start;
