-- error: queries/errors/nested_too_deep.sql:7:77: expression nested more than 64 levels deep; for long lists of alternatives use IN (...)
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT device_id, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
WHERE ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((bytes_in > 0))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))
GROUP BY device_id, window_start;
