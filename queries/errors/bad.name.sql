-- error: queries/errors/bad.name.sql: a query is named after its file, and `bad.name` is not a valid query name: use only letters, digits, `_` and `-`
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, '250us')
GROUP BY device_id, window_start;
