//! Synthetic data-center telemetry and market ticks with labelled anomalies.
//!
//! The generator is what the demo and the benchmarks feed to Kafka, and what
//! tests use when they need realistic volume. It is deterministic for a
//! seed. Per event-time second it emits one JSON telemetry record per host
//! (`dc`, `rack`, `host`, `cpu`, `mem`, `temp_c`, `power_w`, `fan_rpm`,
//! `net_rx_bps`, `disk_io`, `latency_ms`) and one tick per market symbol
//! (`symbol`, `price`, `volume`, `bid`, `ask`). A small share of records is
//! emitted a few seconds late, as real producers do.
//!
//! Anomalies are planned up front ([`plan_anomalies`]) so that a run knows
//! the ground truth it can score its alerts against: a short spike, a level
//! shift, a stuck sensor, a rack-wide temperature rise and a price jump —
//! which threshold rules find — and three that no single-metric threshold
//! can find, because every metric stays inside the fleet's normal range
//! while a relation between metrics breaks: power decoupled from CPU,
//! latency rising at normal load, and a host warming while its fans turn
//! as usual.

mod anomaly;
mod values;

use std::collections::VecDeque;
use std::io::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use anomaly::{Anomaly, AnomalyKind, plan_anomalies};
use values::{HostState, SymbolState, normal};

/// Which topic a generated record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Telemetry,
    Market,
}

/// The shape of the simulated fleet.
#[derive(Debug, Clone)]
pub struct Topology {
    pub dcs: usize,
    pub racks_per_dc: usize,
    pub hosts_per_rack: usize,
    pub symbols: usize,
}

impl Default for Topology {
    /// 4 data centers × 8 racks × 16 hosts = 512 hosts, and 6 market symbols.
    fn default() -> Self {
        Topology {
            dcs: 4,
            racks_per_dc: 8,
            hosts_per_rack: 16,
            symbols: 6,
        }
    }
}

impl Topology {
    pub fn hosts(&self) -> usize {
        self.dcs * self.racks_per_dc * self.hosts_per_rack
    }
}

const DC_NAMES: [&str; 8] = [
    "fra1", "ams1", "lon1", "iad1", "sjc1", "sin1", "syd1", "gru1",
];
const SYMBOLS: [&str; 8] = [
    "DE-BASE", "FR-BASE", "NL-BASE", "NORD-SE3", "PJM-WEST", "ERCOT-N", "CAISO-SP", "JEPX-TK",
];

/// Identity labels of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostId {
    pub dc: String,
    pub rack: String,
    pub host: String,
}

/// Settings of one generator run.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub topology: Topology,
    /// Event time of the first record, in ms since the epoch (whole second).
    pub start_ms: i64,
    /// How long the run will last in event time; anomalies are planned
    /// inside it.
    pub duration_ms: i64,
    pub seed: u64,
    /// Whether to inject anomalies at all.
    pub anomalies: bool,
    /// Share of records emitted 1–3 s late (out of order). Default 1%.
    pub late_fraction: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            topology: Topology::default(),
            start_ms: 1_764_201_600_000, // 2025-11-27T00:00:00Z
            duration_ms: 30 * 60_000,
            seed: 7,
            anomalies: true,
            late_fraction: 0.01,
        }
    }
}

/// The generator. See the module docs.
pub struct Generator {
    hosts: Vec<(HostId, HostState)>,
    symbols: Vec<(String, SymbolState)>,
    anomalies: Vec<Anomaly>,
    rng: SmallRng,
    now_ms: i64,
    late_fraction: f64,
    /// Records held back to be emitted out of order: (due second, stream, key, payload).
    delayed: VecDeque<(i64, Stream, String, Vec<u8>)>,
    buf: Vec<u8>,
    ts_text: String,
}

impl Generator {
    pub fn new(cfg: GeneratorConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let t = &cfg.topology;
        let mut hosts = Vec::with_capacity(t.hosts());
        for d in 0..t.dcs {
            let dc = DC_NAMES
                .get(d)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("dc{d}"));
            for r in 0..t.racks_per_dc {
                let rack = format!("{dc}-r{:02}", r + 1);
                for h in 0..t.hosts_per_rack {
                    let id = HostId {
                        dc: dc.clone(),
                        rack: rack.clone(),
                        host: format!("{rack}-h{:02}", h + 1),
                    };
                    hosts.push((id, HostState::new(&mut rng)));
                }
            }
        }
        let symbols = (0..t.symbols)
            .map(|i| {
                let name = SYMBOLS
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("SYM{i}"));
                (name, SymbolState::new(&mut rng))
            })
            .collect::<Vec<_>>();
        let anomalies = if cfg.anomalies {
            let host_ids: Vec<HostId> = hosts.iter().map(|(h, _)| h.clone()).collect();
            let names: Vec<String> = symbols.iter().map(|(s, _)| s.clone()).collect();
            plan_anomalies(&host_ids, &names, cfg.start_ms, cfg.duration_ms, cfg.seed)
        } else {
            Vec::new()
        };
        Generator {
            hosts,
            symbols,
            anomalies,
            rng,
            now_ms: cfg.start_ms - cfg.start_ms.rem_euclid(1000),
            late_fraction: cfg.late_fraction,
            delayed: VecDeque::new(),
            buf: Vec::with_capacity(512),
            ts_text: String::new(),
        }
    }

    /// The injected anomalies: the ground truth of this run.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// Number of telemetry records per event second.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Event time of the next second to be emitted.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Emits one event-time second: a telemetry record per host and a tick
    /// per symbol, plus any earlier records that were held back. `sink` gets
    /// the stream, the message key and the JSON payload.
    pub fn emit_second(&mut self, sink: &mut dyn FnMut(Stream, &str, &[u8])) {
        let t = self.now_ms;
        self.ts_text = chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        for i in 0..self.hosts.len() {
            let effects = anomaly::host_effects(&self.anomalies, &self.hosts[i].0, t);
            let (id, state) = &mut self.hosts[i];
            let v = state.step(t, &effects, &mut self.rng);
            self.buf.clear();
            let _ = write!(
                self.buf,
                r#"{{"ts":"{}","dc":"{}","rack":"{}","host":"{}","cpu":{:.2},"mem":{:.2},"temp_c":{:.2},"power_w":{:.1},"fan_rpm":{:.0},"net_rx_bps":{:.0},"disk_io":{:.1},"latency_ms":{:.3}}}"#,
                self.ts_text,
                id.dc,
                id.rack,
                id.host,
                v.cpu,
                v.mem,
                v.temp_c,
                v.power_w,
                v.fan_rpm,
                v.net_rx_bps,
                v.disk_io,
                v.latency_ms
            );
            if self.rng.random::<f64>() < self.late_fraction {
                let due = t + 1000 * self.rng.random_range(1..=3);
                self.delayed
                    .push_back((due, Stream::Telemetry, id.host.clone(), self.buf.clone()));
            } else {
                sink(Stream::Telemetry, &id.host, &self.buf);
            }
        }
        for i in 0..self.symbols.len() {
            let jump = anomaly::price_jump(&self.anomalies, &self.symbols[i].0, t);
            let (name, state) = &mut self.symbols[i];
            let q = state.step(jump, &mut self.rng);
            self.buf.clear();
            let _ = write!(
                self.buf,
                r#"{{"ts":"{}","symbol":"{}","price":{:.3},"volume":{:.1},"bid":{:.3},"ask":{:.3}}}"#,
                self.ts_text, name, q.price, q.volume, q.bid, q.ask
            );
            sink(Stream::Market, name, &self.buf);
        }
        // Release held-back records whose time has come (after this second's
        // own records, so they arrive out of order).
        let mut keep = VecDeque::with_capacity(self.delayed.len());
        while let Some((due, stream, key, payload)) = self.delayed.pop_front() {
            if due <= t {
                sink(stream, &key, &payload);
            } else {
                keep.push_back((due, stream, key, payload));
            }
        }
        self.delayed = keep;
        self.now_ms += 1000;
    }

    /// Emits every record still held back (end of a run).
    pub fn drain(&mut self, sink: &mut dyn FnMut(Stream, &str, &[u8])) {
        for (_, stream, key, payload) in self.delayed.drain(..) {
            sink(stream, &key, &payload);
        }
    }

    /// A standard normal sample from the generator's own stream.
    pub fn normal(&mut self) -> f64 {
        normal(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_one_record_per_host_per_second_and_is_deterministic() {
        let run = || {
            let mut g = Generator::new(GeneratorConfig {
                late_fraction: 0.0,
                ..Default::default()
            });
            let mut out = Vec::new();
            for _ in 0..3 {
                g.emit_second(&mut |s, k, p| out.push((s, k.to_string(), p.to_vec())));
            }
            out
        };
        let a = run();
        assert_eq!(
            a.iter().filter(|r| r.0 == Stream::Telemetry).count(),
            3 * 512
        );
        assert_eq!(a.iter().filter(|r| r.0 == Stream::Market).count(), 3 * 6);
        assert_eq!(a, run());
        let v: serde_json::Value = serde_json::from_slice(&a[0].2).unwrap();
        assert_eq!(v["ts"], "2025-11-27T00:00:00.000Z");
        assert_eq!(v["host"], "fra1-r01-h01");
    }

    #[test]
    fn plans_every_kind_of_anomaly_in_a_demo_length_run() {
        let g = Generator::new(GeneratorConfig::default());
        for kind in [
            AnomalyKind::Spike,
            AnomalyKind::LevelShift,
            AnomalyKind::StuckSensor,
            AnomalyKind::RackTemperatureRise,
            AnomalyKind::PriceJump,
            AnomalyKind::PowerDecoupled,
            AnomalyKind::LatencyDrift,
            AnomalyKind::CoolingDrift,
        ] {
            assert!(
                g.anomalies().iter().any(|a| a.kind == kind),
                "{kind:?} missing"
            );
        }
    }
}
