-- A whole rack runs hot: its average inlet temperature leaves the normal band.
-- @name: RackOverheating
-- @severity: critical
SELECT dc, rack, window_start, window_end, temp_avg, temp_max, hosts
FROM rack_1m
WHERE temp_avg > 35
