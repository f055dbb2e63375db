-- A host behaves unlike itself and the fleet: the anomaly model
-- (`host_behaviour` in config/telemine.toml) finds the relation between its
-- CPU, power, temperature, fans and latency broken, though each may stay
-- inside its normal range. anomaly_features names the model features that
-- missed most, worst first.
-- A single unusual minute is left pending: it must hold for two windows.
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
