//! Energy from NVML's counters and from sampled power: the integration, the choice
//! between the two, and the provenance that goes with the number.

use serde::{Deserialize, Serialize};

use crate::record::Method;
use crate::units::{Millijoules, Milliwatts};

/// Counter and samples disagree when they differ by more than this fraction.
pub const DISAGREE_TOLERANCE: f64 = 0.10;

/// Trapezoidal integral of power samples, with the summary the local record keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrator {
    /// Energy between the first and the last sample.
    pub mj: f64,
    pub samples: u64,
    /// Seconds since the window's start of the first and the last sample.
    pub first_s: Option<f64>,
    pub last_s: Option<f64>,
    pub last_mw: Option<f64>,
    pub first_mw: Option<f64>,
    pub min_mw: Option<f64>,
    pub max_mw: Option<f64>,
}

impl Integrator {
    /// Adds a reading of `power` taken `t_s` seconds after the window's start.
    /// Readings must come in time order; an out-of-order one is ignored.
    pub fn add(&mut self, t_s: f64, power: Milliwatts) {
        let p = power.0;
        if !p.is_finite() || p < 0.0 {
            return;
        }
        if let (Some(last_t), Some(last_p)) = (self.last_s, self.last_mw) {
            if t_s < last_t {
                return;
            }
            self.mj += (p + last_p) / 2.0 * (t_s - last_t);
        } else {
            self.first_s = Some(t_s);
            self.first_mw = Some(p);
        }
        self.last_s = Some(t_s);
        self.last_mw = Some(p);
        self.samples += 1;
        self.min_mw = Some(self.min_mw.map_or(p, |m| m.min(p)));
        self.max_mw = Some(self.max_mw.map_or(p, |m| m.max(p)));
    }

    /// Energy over a window of `window_s` seconds and the fraction of it the samples
    /// cover. Gaps at the window's edges no longer than `edge_s` (about two sampling
    /// intervals) are filled by holding the nearest reading; longer ones are not
    /// guessed, and show as coverage below 1.
    pub fn over_window(&self, window_s: f64, edge_s: f64) -> Option<(Millijoules, f64)> {
        let (first_t, last_t) = (self.first_s?, self.last_s?);
        let (first_p, last_p) = (self.first_mw?, self.last_mw?);
        let mut mj = self.mj;
        let mut covered = last_t - first_t;
        let head = first_t.max(0.0);
        if head <= edge_s {
            mj += first_p * head;
            covered += head;
        }
        let tail = (window_s - last_t).max(0.0);
        if tail <= edge_s {
            mj += last_p * tail;
            covered += tail;
        }
        let coverage = if window_s > 0.0 {
            (covered / window_s).clamp(0.0, 1.0)
        } else {
            1.0
        };
        Some((Millijoules(mj), coverage))
    }

    pub fn mean_mw(&self) -> Option<f64> {
        let (a, b) = (self.first_s?, self.last_s?);
        if b > a {
            Some(self.mj / (b - a))
        } else {
            self.last_mw
        }
    }
}

/// Counter difference: `None` when a reading is missing or the counter went
/// backwards (the driver was reloaded), never a negative or wrapped number.
pub fn counter_delta(start: Option<u64>, end: Option<u64>) -> Option<Millijoules> {
    match (start, end) {
        (Some(a), Some(b)) if b >= a => Some(Millijoules((b - a) as f64)),
        _ => None,
    }
}

/// What is known of one GPU over the job's window.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReadings {
    pub start_counter: Option<u64>,
    pub end_counter: Option<u64>,
    /// The sampler saw the counter go backwards during the window.
    pub reset_seen: bool,
    /// Sampled energy and its coverage of the window.
    pub sampled: Option<(Millijoules, f64)>,
}

/// One GPU's energy and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnergy {
    pub energy: Millijoules,
    pub method: Method,
    pub coverage: Option<f64>,
    pub counter: Option<Millijoules>,
    pub sampled: Option<Millijoules>,
    pub flags: Vec<&'static str>,
}

/// Chooses the GPU's energy: the counter difference where the counter exists and did
/// not reset, the sampled integral otherwise; `None` when neither is known.
pub fn gpu_energy(r: &GpuReadings) -> Option<GpuEnergy> {
    let counter = if r.reset_seen {
        None
    } else {
        counter_delta(r.start_counter, r.end_counter)
    };
    let reset =
        r.reset_seen || matches!((r.start_counter, r.end_counter), (Some(a), Some(b)) if b < a);
    let mut flags = Vec::new();
    if reset {
        flags.push("reset");
    }
    let sampled = r.sampled.map(|(e, _)| e);
    let coverage = r.sampled.map(|(_, c)| c);
    match (counter, r.sampled) {
        (Some(c), sampled_pair) => {
            if let Some((s, cov)) = sampled_pair {
                let scale = c.0.max(s.0);
                if cov >= 0.9 && scale > 0.0 && (c.0 - s.0).abs() / scale > DISAGREE_TOLERANCE {
                    flags.push("disagree");
                }
            }
            Some(GpuEnergy {
                energy: c,
                method: Method::Counter,
                coverage,
                counter: Some(c),
                sampled,
                flags,
            })
        }
        (None, Some((s, cov))) => {
            if cov < 0.99 {
                flags.push("partial");
            }
            Some(GpuEnergy {
                energy: s,
                method: Method::Sampled,
                coverage: Some(cov),
                counter: None,
                sampled: Some(s),
                flags,
            })
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_power_integrates_exactly() {
        let mut i = Integrator::default();
        for k in 0..=10 {
            i.add(k as f64, Milliwatts(250_000.0));
        }
        let (e, cov) = i.over_window(10.0, 2.0).unwrap();
        assert!((e.0 - 2_500_000.0).abs() < 1e-6);
        assert_eq!(cov, 1.0);
        assert_eq!(i.samples, 11);
        assert_eq!(i.mean_mw(), Some(250_000.0));
    }

    #[test]
    fn ramp_is_exact_under_trapezoids() {
        let mut i = Integrator::default();
        for k in 0..=100 {
            i.add(k as f64 * 0.1, Milliwatts(1000.0 * k as f64));
        }
        // integral of 10_000 t mW over 0..10 s = 500_000 mJ
        assert!((i.over_window(10.0, 0.2).unwrap().0 .0 - 500_000.0).abs() < 1e-6);
    }

    #[test]
    fn short_edges_filled_long_gaps_not_guessed() {
        let mut i = Integrator::default();
        i.add(0.5, Milliwatts(100.0));
        i.add(10.0, Milliwatts(100.0));
        let (e, cov) = i.over_window(10.5, 1.0).unwrap();
        assert!((e.0 - 1050.0).abs() < 1e-9);
        assert_eq!(cov, 1.0);
        // Sampler died at 10 s of a 100 s window: energy of what was seen, coverage 0.1.
        let (e, cov) = i.over_window(100.0, 1.0).unwrap();
        assert!((e.0 - 1000.0).abs() < 1e-9, "{e:?}");
        assert!((cov - 0.1).abs() < 1e-9);
        assert!(Integrator::default().over_window(1.0, 1.0).is_none());
    }

    #[test]
    fn out_of_order_and_bad_readings_ignored() {
        let mut i = Integrator::default();
        i.add(1.0, Milliwatts(10.0));
        i.add(0.5, Milliwatts(1e9));
        i.add(2.0, Milliwatts(f64::NAN));
        i.add(2.0, Milliwatts(-5.0));
        assert_eq!(i.samples, 1);
        assert_eq!(i.max_mw, Some(10.0));
    }

    #[test]
    fn counter_difference_never_negative() {
        assert_eq!(counter_delta(Some(10), Some(25)), Some(Millijoules(15.0)));
        assert_eq!(counter_delta(Some(25), Some(10)), None);
        assert_eq!(counter_delta(None, Some(10)), None);
        assert_eq!(
            counter_delta(Some(u64::MAX - 1), Some(u64::MAX)),
            Some(Millijoules(1.0))
        );
    }

    #[test]
    fn choice_of_method() {
        let sampled = Some((Millijoules(1000.0), 1.0));
        let c = gpu_energy(&GpuReadings {
            start_counter: Some(5000),
            end_counter: Some(6010),
            reset_seen: false,
            sampled,
        })
        .unwrap();
        assert_eq!(c.method, Method::Counter);
        assert_eq!(c.energy, Millijoules(1010.0));
        assert!(c.flags.is_empty());

        // Counter reset: end < start -> sampled, flagged.
        let r = gpu_energy(&GpuReadings {
            start_counter: Some(5000),
            end_counter: Some(100),
            reset_seen: false,
            sampled,
        })
        .unwrap();
        assert_eq!(r.method, Method::Sampled);
        assert_eq!(r.energy, Millijoules(1000.0));
        assert_eq!(r.flags, ["reset"]);

        // A reset the sampler saw, even if the end counter grew past the start again.
        let r = gpu_energy(&GpuReadings {
            start_counter: Some(5000),
            end_counter: Some(9000),
            reset_seen: true,
            sampled,
        })
        .unwrap();
        assert_eq!(r.method, Method::Sampled);

        // No counter on this GPU.
        let n = gpu_energy(&GpuReadings {
            start_counter: None,
            end_counter: None,
            reset_seen: false,
            sampled: Some((Millijoules(10.0), 0.5)),
        })
        .unwrap();
        assert_eq!(n.method, Method::Sampled);
        assert_eq!(n.flags, ["partial"]);

        // Disagreement is visible.
        let d = gpu_energy(&GpuReadings {
            start_counter: Some(0),
            end_counter: Some(2000),
            reset_seen: false,
            sampled,
        })
        .unwrap();
        assert_eq!(d.flags, ["disagree"]);

        // Nothing known: no number.
        assert!(gpu_energy(&GpuReadings {
            start_counter: Some(1),
            end_counter: None,
            reset_seen: false,
            sampled: None
        })
        .is_none());
    }
}
