-- error: queries/errors/top_k_in_expression.sql:6:46: APPROX_TOP_K gives a list of values and counts: select it as it is (with an alias), not inside an expression or HAVING
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

SELECT window_start,
       APPROX_TOP_K(device_id, 3) IS NULL AS nothing
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY window_start;
