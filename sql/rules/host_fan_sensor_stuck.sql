-- A fan-speed sensor that repeats one value for a full minute is stuck:
-- real fans always jitter.
-- @name: HostFanSensorStuck
-- @severity: warning
SELECT dc, rack, host, window_start, window_end, fan_std, n
FROM host_1m
WHERE fan_std < 1 AND n >= 30
