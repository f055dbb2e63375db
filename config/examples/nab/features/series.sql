-- One row per record of the series (its one-second window): the value
-- the detector scores. Records sharing a timestamp average into one row.
SELECT window_start, window_end, avg(value) AS value
FROM TUMBLE(series, timestamp, INTERVAL '1 second')
GROUP BY window_start, window_end
