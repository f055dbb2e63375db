-- A fan-speed sensor that repeats one value for a full minute is stuck:
-- real fans always jitter.
-- @name: HostFanSensorStuck
-- @severity: warning
-- @summary: fan sensor of {{ $labels.host }} repeats one value
-- @description: The fan speed of {{ $labels.host }} ({{ $labels.rack }}) varied by {{ $values.fan_std }} rpm over {{ $values.n }} readings: the sensor is stuck, not the fan.
-- @runbook_url: https://runbooks.example.com/telemine/fan-sensor-stuck
SELECT dc, rack, host, window_start, window_end, fan_std, n
FROM host_1m
WHERE fan_std < 1 AND n >= 30
