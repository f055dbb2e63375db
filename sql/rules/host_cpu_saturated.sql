-- A host's CPU stays saturated for a whole minute.
-- @name: HostCpuSaturated
-- @severity: warning
-- @summary: {{ $labels.host }} CPU at {{ $values.cpu_avg }}% for a whole minute
-- @description: Host {{ $labels.host }} in rack {{ $labels.rack }} ({{ $labels.dc }}) averaged {{ $values.cpu_avg }}% CPU while drawing {{ $values.power_avg }} W.
-- @runbook_url: https://runbooks.example.com/telemine/host-cpu-saturated
SELECT dc, rack, host, window_start, window_end, cpu_avg, power_avg
FROM host_1m
WHERE cpu_avg > 85 AND n >= 30
