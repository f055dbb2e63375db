//! Per-host and per-symbol value processes.

use rand::Rng;
use rand::rngs::SmallRng;

use super::anomaly::HostEffects;

/// A standard normal sample (Box–Muller).
pub(crate) fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One host's telemetry at one second.
pub(crate) struct HostValues {
    pub cpu: f64,
    pub mem: f64,
    pub temp_c: f64,
    pub power_w: f64,
    pub fan_rpm: f64,
    pub net_rx_bps: f64,
    pub disk_io: f64,
    pub latency_ms: f64,
}

/// A host's baseline: each host has its own load level and daily rhythm.
pub(crate) struct HostState {
    cpu_base: f64,
    period_s: f64,
    phase: f64,
    mem_base: f64,
    temp_base: f64,
    net_base: f64,
    disk_base: f64,
    lat_base: f64,
    /// Last fan reading, frozen while the fan sensor is stuck.
    fan_last: f64,
}

impl HostState {
    pub fn new(rng: &mut SmallRng) -> Self {
        HostState {
            cpu_base: rng.random_range(15.0..50.0),
            period_s: rng.random_range(600.0..3600.0),
            phase: rng.random_range(0.0..std::f64::consts::TAU),
            mem_base: rng.random_range(30.0..80.0),
            temp_base: rng.random_range(22.0..29.0),
            net_base: rng.random_range(1e6..5e7),
            disk_base: rng.random_range(50.0..500.0),
            lat_base: rng.random_range(2.0..8.0),
            fan_last: 4500.0,
        }
    }

    pub fn step(&mut self, t_ms: i64, fx: &HostEffects, rng: &mut SmallRng) -> HostValues {
        let s = t_ms as f64 / 1000.0;
        let wave = (std::f64::consts::TAU * s / self.period_s + self.phase).sin();
        let mut cpu = self.cpu_base + 8.0 * wave + 4.0 * normal(rng);
        if let Some(level) = fx.cpu_level {
            cpu = level + 2.5 * normal(rng);
        }
        if fx.spike {
            cpu = 100.0;
        }
        let cpu = cpu.clamp(0.0, 100.0);
        let mem = (self.mem_base + normal(rng)).clamp(0.0, 100.0);
        // The temperature the fans answer to, and the one measured.
        let cooled = self.temp_base + 0.08 * (cpu - 40.0) + 0.5 * normal(rng) + fx.temp_rise;
        let temp_c = cooled + fx.uncooled_rise;
        let mut power_w = 180.0 + 2.2 * (cpu + fx.power_extra_cpu) + 5.0 * normal(rng);
        if fx.cpu_level.is_some() {
            power_w *= 1.35;
        }
        let fan_rpm = if fx.fan_stuck {
            self.fan_last
        } else {
            let f = 3500.0 + 40.0 * cooled + 60.0 * normal(rng);
            self.fan_last = f.round();
            f
        };
        let net_rx_bps = (self.net_base * (1.0 + 0.2 * wave) * (1.0 + 0.1 * normal(rng))).max(0.0);
        let disk_io = (self.disk_base * (1.0 + 0.15 * normal(rng))).max(0.0);
        // Latency grows with load (queueing).
        let load = ((cpu + fx.latency_extra_cpu) / 100.0).min(1.0);
        let mut latency_ms =
            self.lat_base * (1.0 + 0.3 * normal(rng).abs()) * (1.0 + 1.5 * load * load);
        if fx.spike {
            latency_ms *= 40.0;
        }
        HostValues {
            cpu,
            mem,
            temp_c,
            power_w,
            fan_rpm,
            net_rx_bps,
            disk_io,
            latency_ms,
        }
    }
}

/// One market tick.
pub(crate) struct Quote {
    pub price: f64,
    pub volume: f64,
    pub bid: f64,
    pub ask: f64,
}

/// A mean-reverting price walk around a level that jumps move permanently.
pub(crate) struct SymbolState {
    price: f64,
    level: f64,
}

impl SymbolState {
    pub fn new(rng: &mut SmallRng) -> Self {
        let level = rng.random_range(40.0..120.0);
        SymbolState {
            price: level,
            level,
        }
    }

    /// `jump` is a multiplicative jump applied at this tick (1.0 for none).
    pub fn step(&mut self, jump: f64, rng: &mut SmallRng) -> Quote {
        if jump != 1.0 {
            self.level *= jump;
            self.price *= jump;
        }
        let pull = 0.02 * (self.level - self.price);
        self.price = (self.price + pull + self.price * 0.0008 * normal(rng)).max(0.01);
        let spread = self.price * 0.001;
        Quote {
            price: self.price,
            volume: rng.random_range(0.5..25.0),
            bid: self.price - spread / 2.0,
            ask: self.price + spread / 2.0,
        }
    }
}
