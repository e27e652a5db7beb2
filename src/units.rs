//! Units as types: energy, power and carbon intensity never travel as bare numbers
//! between modules.

use serde::{Deserialize, Serialize};

/// Energy in millijoules (NVML's unit for its energy counter).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Millijoules(pub f64);

impl Millijoules {
    pub fn watt_hours(self) -> f64 {
        self.0 / 3_600_000.0
    }
    pub fn joules(self) -> f64 {
        self.0 / 1000.0
    }
}

impl std::ops::Add for Millijoules {
    type Output = Millijoules;
    fn add(self, rhs: Self) -> Self {
        Millijoules(self.0 + rhs.0)
    }
}

impl std::ops::AddAssign for Millijoules {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

/// Power in milliwatts (NVML's unit for power readings).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Milliwatts(pub f64);

impl Milliwatts {
    pub fn watts(self) -> f64 {
        self.0 / 1000.0
    }
}

/// Grid carbon intensity in grams of CO2-equivalent per kilowatt-hour.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct GramsPerKwh(pub f64);

/// CO2e in grams of energy `wh` drawn by the IT equipment, scaled by the data centre's PUE.
///
/// co2e_g = wh / 1000 x pue x intensity
pub fn co2e_grams(wh: f64, pue: f64, intensity: GramsPerKwh) -> f64 {
    wh / 1000.0 * pue * intensity.0
}

/// The wall clock, in seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millijoules_to_watt_hours() {
        assert_eq!(Millijoules(3_600_000.0).watt_hours(), 1.0);
        assert_eq!(Millijoules(1800.0).joules(), 1.8);
    }

    #[test]
    fn co2e_follows_strubell_formula() {
        // 1 kWh at PUE 1.58 and 432.7 g/kWh (Strubell et al. 2019, US 2018 average).
        let g = co2e_grams(1000.0, 1.58, GramsPerKwh(432.7));
        assert!((g - 683.666).abs() < 1e-9, "{g}");
        assert_eq!(co2e_grams(0.0, 1.58, GramsPerKwh(432.7)), 0.0);
    }
}
