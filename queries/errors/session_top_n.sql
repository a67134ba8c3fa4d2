-- error: queries/errors/session_top_n.sql:8:96: a window Top-N ranks the rows of one window, and every session is a window of its own; rank over TUMBLE or HOP
CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
    WITH (event_time = 'ts');

-- Each session is its own window, so ranking "within the window" would rank one row.
SELECT * FROM (
    SELECT *,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY bytes_in DESC) AS rank
    FROM (SELECT device_id, window_start, window_end, SUM(bytes_in) AS bytes_in
          FROM SESSION(readings, ts, INTERVAL '30' SECOND)
          GROUP BY device_id, window_start, window_end)
) WHERE rank <= 3;
