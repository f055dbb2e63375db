-- A host's CPU stays saturated for a whole minute.
-- @name: HostCpuSaturated
-- @severity: warning
SELECT dc, rack, host, window_start, window_end, cpu_avg, power_avg
FROM host_1m
WHERE cpu_avg > 85 AND n >= 30
