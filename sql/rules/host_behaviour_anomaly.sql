-- A host behaves unlike itself and the fleet: the anomaly model
-- (`host_behaviour` in config/telemine.toml) finds the relation between its
-- CPU, power, temperature, fans and latency broken, though each may stay
-- inside its normal range. anomaly_features names the view's columns that
-- missed most, worst first, with direction and expected value.
-- The lifecycle (tests/default_model.rs holds it to this):
-- - @for 1m: a single unusual minute is left pending; two in a row fire.
-- - no @keep_firing_for: the alert resolves at the first normal minute, so
--   a burst notifies once and resolves when the host is normal again.
-- - a level shift that stays, or a pattern that keeps coming back, fires at
--   first and becomes the host's normal once it fills a quarter of its last
--   120 minutes (the model's normal_share and error_history): it resolves
--   and stays resolved instead of firing for ever.
-- @name: HostBehaviourAnomaly
-- @severity: warning
-- @for: 1m
-- @label.detector: model
-- @summary: {{ $labels.host }} behaves unusually: {{ $values.anomaly_features }}
-- @description: The anomaly model scores {{ $labels.host }} at {{ $values.anomaly_score }}; the features that missed most: {{ $values.anomaly_features }} (CPU {{ $values.cpu_avg }}%, power {{ $values.power_avg }} W, temperature {{ $values.temp_avg }} °C, fans {{ $values.fan_avg }} rpm, latency {{ $values.lat_avg }} ms).
-- @runbook_url: https://runbooks.example.com/telemine/host-behaviour-anomaly
SELECT dc, rack, host, window_start, window_end, anomaly_score, anomaly_features,
       cpu_avg, power_avg, temp_avg, fan_avg, lat_avg
FROM host_1m
WHERE anomaly_score > 0.999
