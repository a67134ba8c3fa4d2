-- The five devices that moved the most bytes in each minute (a window Top-N): ranked as
-- each window closes, ties by device id.
CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    bytes_out  BIGINT
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT * FROM (
    SELECT *,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY moved DESC) AS rank
    FROM (
        SELECT device_id, window_start, window_end,
               SUM(bytes_in) + SUM(bytes_out) AS moved,
               COUNT(*) AS readings
        FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
        GROUP BY device_id, window_start, window_end
    )
) WHERE rank <= 5;
