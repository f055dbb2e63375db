//! Planning and applying injected anomalies.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::HostId;

/// The kinds of anomaly the generator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// CPU pinned at 100% and latency ×40 for 20 s on one host.
    Spike,
    /// CPU saturates around 90% (power +35%) for 4 min on one host.
    LevelShift,
    /// The fan-speed sensor of one host repeats its last value for 5 min.
    StuckSensor,
    /// Every host of one rack heats up by 14 °C (ramp over 1 min) for 5 min.
    RackTemperatureRise,
    /// One market symbol's price level jumps by ±15% at one tick.
    PriceJump,
    /// One host draws the power of 35 CPU points more than it runs, for 5
    /// min: power stays inside the fleet's range, only its relation to
    /// CPU breaks.
    PowerDecoupled,
    /// One host's latency rises over 1 min to what 50 CPU points more
    /// load would give, and stays there for 5 min at its normal load:
    /// inside the fleet's range of latencies.
    LatencyDrift,
    /// One host warms by 6 °C (ramp over 1 min) for 5 min while its fans
    /// keep turning as for its usual temperature: both inside the fleet's
    /// ranges, the cooling relation broken.
    CoolingDrift,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::StuckSensor => "stuck_sensor",
            AnomalyKind::RackTemperatureRise => "rack_temperature_rise",
            AnomalyKind::PriceJump => "price_jump",
            AnomalyKind::PowerDecoupled => "power_decoupled",
            AnomalyKind::LatencyDrift => "latency_drift",
            AnomalyKind::CoolingDrift => "cooling_drift",
        }
    }

    fn duration_ms(self) -> i64 {
        match self {
            AnomalyKind::Spike => 20_000,
            AnomalyKind::LevelShift => 240_000,
            AnomalyKind::StuckSensor => 300_000,
            AnomalyKind::RackTemperatureRise => 300_000,
            AnomalyKind::PriceJump => 1_000,
            AnomalyKind::PowerDecoupled | AnomalyKind::LatencyDrift | AnomalyKind::CoolingDrift => {
                300_000
            }
        }
    }

    /// Whether only a relation between metrics breaks: every metric stays
    /// inside the fleet's normal range, so no single-metric threshold can
    /// find it.
    pub fn relational(self) -> bool {
        matches!(
            self,
            AnomalyKind::PowerDecoupled | AnomalyKind::LatencyDrift | AnomalyKind::CoolingDrift
        )
    }
}

/// One injected anomaly: what, where (labels) and when (event time,
/// `[start_ms, end_ms)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub labels: BTreeMap<String, String>,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Anomaly {
    fn active(&self, t: i64) -> bool {
        t >= self.start_ms && t < self.end_ms
    }
}

/// Plans anomalies for a run: after a 2-minute warm-up, one every 3 minutes
/// of event time, cycling through the kinds (the relational ones from the
/// fourth on, when a model has had time to learn), each on a different
/// target.
pub fn plan_anomalies(
    hosts: &[HostId],
    symbols: &[String],
    start_ms: i64,
    duration_ms: i64,
    seed: u64,
) -> Vec<Anomaly> {
    const KINDS: [AnomalyKind; 8] = [
        AnomalyKind::Spike,
        AnomalyKind::RackTemperatureRise,
        AnomalyKind::PriceJump,
        AnomalyKind::PowerDecoupled,
        AnomalyKind::LevelShift,
        AnomalyKind::LatencyDrift,
        AnomalyKind::StuckSensor,
        AnomalyKind::CoolingDrift,
    ];
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut host_order: Vec<usize> = (0..hosts.len()).collect();
    host_order.shuffle(&mut rng);
    let mut racks: Vec<(String, String)> = hosts
        .iter()
        .map(|h| (h.dc.clone(), h.rack.clone()))
        .collect();
    racks.dedup();
    racks.shuffle(&mut rng);
    let mut out = Vec::new();
    let mut t = start_ms + 120_000;
    let (mut next_host, mut next_rack, mut next_symbol) = (0, 0, 0);
    for i in 0.. {
        let kind = KINDS[i % KINDS.len()];
        let start = t + 1000 * rng.random_range(0..40);
        if start + kind.duration_ms() > start_ms + duration_ms {
            break;
        }
        let labels: BTreeMap<String, String> = match kind {
            AnomalyKind::Spike
            | AnomalyKind::LevelShift
            | AnomalyKind::StuckSensor
            | AnomalyKind::PowerDecoupled
            | AnomalyKind::LatencyDrift
            | AnomalyKind::CoolingDrift => {
                if hosts.is_empty() {
                    continue;
                }
                let h = &hosts[host_order[next_host % hosts.len()]];
                next_host += 1;
                [("host".to_string(), h.host.clone())].into()
            }
            AnomalyKind::RackTemperatureRise => {
                if racks.is_empty() {
                    continue;
                }
                let (dc, rack) = &racks[next_rack % racks.len()];
                next_rack += 1;
                [
                    ("dc".to_string(), dc.clone()),
                    ("rack".to_string(), rack.clone()),
                ]
                .into()
            }
            AnomalyKind::PriceJump => {
                if symbols.is_empty() {
                    continue;
                }
                let s = &symbols[next_symbol % symbols.len()];
                next_symbol += 1;
                [("symbol".to_string(), s.clone())].into()
            }
        };
        out.push(Anomaly {
            kind,
            labels,
            start_ms: start,
            end_ms: start + kind.duration_ms(),
        });
        t += 180_000;
    }
    out
}

/// How active anomalies change one host's values at one instant.
#[derive(Debug, Default)]
pub(crate) struct HostEffects {
    pub spike: bool,
    pub cpu_level: Option<f64>,
    pub fan_stuck: bool,
    pub temp_rise: f64,
    /// CPU points whose power the host draws on top of its load.
    pub power_extra_cpu: f64,
    /// CPU points of load the host's latency answers to on top of its own.
    pub latency_extra_cpu: f64,
    /// °C the host warms by that its fans do not follow.
    pub uncooled_rise: f64,
}

pub(crate) fn host_effects(anomalies: &[Anomaly], host: &HostId, t: i64) -> HostEffects {
    let mut fx = HostEffects::default();
    for a in anomalies.iter().filter(|a| a.active(t)) {
        let on_host = a.labels.get("host") == Some(&host.host);
        match a.kind {
            AnomalyKind::Spike if on_host => fx.spike = true,
            AnomalyKind::LevelShift if on_host => fx.cpu_level = Some(90.0),
            AnomalyKind::StuckSensor if on_host => fx.fan_stuck = true,
            AnomalyKind::PowerDecoupled if on_host => fx.power_extra_cpu = 35.0,
            AnomalyKind::LatencyDrift if on_host => {
                let ramp = ((t - a.start_ms) as f64 / 60_000.0).min(1.0);
                fx.latency_extra_cpu = 50.0 * ramp;
            }
            AnomalyKind::CoolingDrift if on_host => {
                let ramp = ((t - a.start_ms) as f64 / 60_000.0).min(1.0);
                fx.uncooled_rise = 6.0 * ramp;
            }
            AnomalyKind::RackTemperatureRise
                if a.labels.get("rack") == Some(&host.rack)
                    && a.labels.get("dc") == Some(&host.dc) =>
            {
                let ramp = ((t - a.start_ms) as f64 / 60_000.0).min(1.0);
                fx.temp_rise += 14.0 * ramp;
            }
            _ => {}
        }
    }
    fx
}

/// The multiplicative price jump for `symbol` at tick `t` (1.0 for none).
pub(crate) fn price_jump(anomalies: &[Anomaly], symbol: &str, t: i64) -> f64 {
    anomalies
        .iter()
        .filter(|a| {
            a.kind == AnomalyKind::PriceJump
                && a.start_ms == t
                && a.labels.get("symbol").map(String::as_str) == Some(symbol)
        })
        .map(|a| {
            if a.start_ms / 1000 % 2 == 0 {
                1.15
            } else {
                0.87
            }
        })
        .product()
}
