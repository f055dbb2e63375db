-- Per-host health over one-minute tumbling windows of event time.
-- Keys (the GROUP BY columns other than the window bounds) become alert
-- labels: dc, rack, host.
SELECT dc, rack, host, window_start, window_end,
       avg(cpu)          AS cpu_avg,
       max(cpu)          AS cpu_max,
       avg(temp_c)       AS temp_avg,
       avg(power_w)      AS power_avg,
       avg(fan_rpm)      AS fan_avg,
       stddev(fan_rpm)   AS fan_std,
       max(latency_ms)   AS lat_max,
       avg(latency_ms)   AS lat_avg,
       count(*)          AS n
FROM TUMBLE(telemetry, ts, INTERVAL '1 minute')
GROUP BY dc, rack, host, window_start, window_end
