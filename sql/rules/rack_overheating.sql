-- A whole rack runs hot: its average inlet temperature leaves the normal band.
-- @name: RackOverheating
-- @severity: critical
-- @summary: rack {{ $labels.rack }} averages {{ $values.temp_avg }} °C inlet
-- @description: Rack {{ $labels.rack }} in {{ $labels.dc }}: inlet temperature averaged {{ $values.temp_avg }} °C (max {{ $values.temp_max }} °C) over {{ $values.hosts }} hosts.
-- @runbook_url: https://runbooks.example.com/telemine/rack-overheating
SELECT dc, rack, window_start, window_end, temp_avg, temp_max, hosts
FROM rack_1m
WHERE temp_avg > 35
