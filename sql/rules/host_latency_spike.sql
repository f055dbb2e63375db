-- A host's request latency jumps far above anything it normally shows.
-- @name: HostLatencySpike
-- @severity: critical
SELECT dc, rack, host, window_start, window_end, lat_max, lat_avg, cpu_max
FROM host_1m
WHERE lat_max > 60
