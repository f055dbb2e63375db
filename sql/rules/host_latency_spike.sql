-- A host's request latency jumps far above anything it normally shows.
-- @name: HostLatencySpike
-- @severity: critical
-- @summary: {{ $labels.host }} latency peaked at {{ $values.lat_max }} ms
-- @description: Request latency of {{ $labels.host }} peaked at {{ $values.lat_max }} ms (average {{ $values.lat_avg }} ms) with CPU at most {{ $values.cpu_max }}%.
-- @runbook_url: https://runbooks.example.com/telemine/host-latency-spike
SELECT dc, rack, host, window_start, window_end, lat_max, lat_avg, cpu_max
FROM host_1m
WHERE lat_max > 60
