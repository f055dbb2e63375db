-- Rack-level temperature and power over one-minute windows: a whole rack
-- warming up is a cooling problem, not a host problem.
SELECT dc, rack, window_start, window_end,
       avg(temp_c)            AS temp_avg,
       max(temp_c)            AS temp_max,
       sum(power_w) / 60.0    AS power_avg_w,
       count(DISTINCT host)   AS hosts
FROM TUMBLE(telemetry, ts, INTERVAL '1 minute')
GROUP BY dc, rack, window_start, window_end
