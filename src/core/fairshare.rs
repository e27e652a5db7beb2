//! Energy-aware fair-share. Slurm's fair-share usage skips the energy TRES, so this
//! tool moves what Slurm does let an outside tool move: an account's shares
//! (`sacctmgr modify account ... set Fairshare=N`).
//!
//! Policy: each account listed in the configuration has a CO2e budget. Its usage is
//! the CO2e of its jobs' records, each decayed with the configured half-life (like
//! PriorityDecayHalfLife). Its shares are its base shares scaled by the budget left,
//! `factor = clamp(1 - usage / budget, floor, 1)`, and never below 1. The base shares
//! are the operator's: remembered on the first run, taken anew whenever someone other
//! than this tool changed them, and put back by `--restore`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::Segment;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Half-life of the decay applied to past jobs' CO2e, days.
    #[serde(default = "default_half_life")]
    pub half_life_days: f64,
    /// How far back jobs are read, days.
    #[serde(default = "default_lookback")]
    pub lookback_days: f64,
    /// No account's shares drop below this fraction of its base.
    #[serde(default = "default_floor")]
    pub floor: f64,
    /// Where base shares and what was set are remembered.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// The comment field the plugin writes to: system, admin or job.
    #[serde(default = "default_field")]
    pub field: String,
    /// Time limit of the sacct call that reads the lookback window, seconds.
    #[serde(default = "default_sacct_timeout")]
    pub sacct_timeout_s: u64,
    /// CO2e budget per account, kg (decayed usage). Only these accounts are touched.
    pub budget_kg: BTreeMap<String, f64>,
}

fn default_half_life() -> f64 {
    7.0
}
fn default_lookback() -> f64 {
    28.0
}
fn default_floor() -> f64 {
    0.1
}
fn default_sacct_timeout() -> u64 {
    600
}
/// The longest `lookback_days` accepted (a century): sacct's `-S now-<seconds>` stays
/// exact.
pub const MAX_LOOKBACK_DAYS: f64 = 36_525.0;
/// The longest `sacct_timeout_s` accepted: a week.
pub const MAX_SACCT_TIMEOUT_S: u64 = 7 * 86_400;
fn default_state() -> PathBuf {
    PathBuf::from("/var/lib/spank-carbon/fairshare.json")
}
fn default_field() -> String {
    "system".into()
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

impl Policy {
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let err = |why: String| PolicyError::Invalid {
            path: path.display().to_string(),
            why,
        };
        let p: Policy = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        if !(p.half_life_days > 0.0 && p.half_life_days.is_finite()) {
            return Err(err("`half_life_days` must be positive".into()));
        }
        if !(p.lookback_days > 0.0 && p.lookback_days <= MAX_LOOKBACK_DAYS) {
            return Err(err(format!(
                "`lookback_days` must be positive and at most {MAX_LOOKBACK_DAYS}"
            )));
        }
        if !(0.0..=1.0).contains(&p.floor) {
            return Err(err("`floor` must be between 0 and 1".into()));
        }
        if !(1..=MAX_SACCT_TIMEOUT_S).contains(&p.sacct_timeout_s) {
            return Err(err(format!(
                "`sacct_timeout_s` must be between 1 and {MAX_SACCT_TIMEOUT_S}"
            )));
        }
        if !["system", "admin", "job"].contains(&p.field.as_str()) {
            return Err(err("`field` must be system, admin or job".into()));
        }
        for (account, budget) in &p.budget_kg {
            if !(budget.is_finite() && *budget > 0.0) {
                return Err(err(format!("`budget_kg.{account}` must be positive")));
            }
        }
        Ok(p)
    }

    /// The weight of CO2e emitted `age_s` seconds ago.
    pub fn decay(&self, age_s: f64) -> f64 {
        0.5f64.powf(age_s.max(0.0) / (self.half_life_days * 86_400.0))
    }
}

/// A job's CO2e (g) weighted by its age at `now` (unix seconds): its record's end is the
/// latest end of its node parts. Only finite, non-negative figures count.
pub fn decayed_g(policy: &Policy, seg: &Segment, now: f64) -> f64 {
    let end = seg.parts.values().map(|p| p.end).fold(0.0, f64::max);
    let g = seg.co2e_g() * policy.decay(now - end);
    if g.is_finite() && g > 0.0 {
        g
    } else {
        0.0
    }
}

/// What the tool remembers per account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owned {
    /// The operator's shares.
    pub base: u32,
    /// What this tool last set.
    pub set: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub accounts: BTreeMap<String, Owned>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRow {
    pub account: String,
    pub base: u32,
    pub current: u32,
    pub usage_kg: f64,
    pub budget_kg: f64,
    pub factor: f64,
    pub new: u32,
    /// Why the base changed, if it did.
    pub note: Option<String>,
}

/// The plan: for each budgeted account that Slurm knows, its new shares.
pub fn plan(
    policy: &Policy,
    state: &State,
    current: &BTreeMap<String, u32>,
    usage_g: &BTreeMap<String, f64>,
) -> Vec<PlanRow> {
    let mut rows = Vec::new();
    for (account, budget) in &policy.budget_kg {
        let Some(&now) = current.get(account) else {
            continue;
        };
        let (base, note) = match state.accounts.get(account) {
            Some(o) if o.set == now => (o.base, None),
            Some(o) => (
                now,
                Some(format!(
                    "shares changed by someone else ({} -> {now}): new base",
                    o.set
                )),
            ),
            None => (now, Some("first run: base remembered".into())),
        };
        let usage_kg = usage_g.get(account).copied().unwrap_or(0.0) / 1000.0;
        let factor = (1.0 - usage_kg / budget).clamp(policy.floor, 1.0);
        let new = ((base as f64 * factor).round() as u32).max(1);
        rows.push(PlanRow {
            account: account.clone(),
            base,
            current: now,
            usage_kg,
            budget_kg: *budget,
            factor,
            new,
            note,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::parse(
            "half_life_days = 7\nfloor = 0.1\n[budget_kg]\nresearch = 100\nheavy = 10\n",
            Path::new("f.toml"),
        )
        .unwrap()
    }

    #[test]
    fn parses_and_rejects_bad_policies() {
        let p = policy();
        assert_eq!(p.budget_kg["heavy"], 10.0);
        assert_eq!(p.lookback_days, 28.0);
        assert_eq!(p.sacct_timeout_s, 600);
        let custom = Policy::parse("sacct_timeout_s = 45\n[budget_kg]\n", Path::new("f.toml"));
        assert_eq!(custom.unwrap().sacct_timeout_s, 45);
        for bad in [
            "sacct_timeout_s = 0\n[budget_kg]\n",
            "sacct_timeout_s = 99999999999\n[budget_kg]\n",
            "sacct_timeout_s = -5\n[budget_kg]\n",
            "lookback_days = 1e300\n[budget_kg]\n",
            "lookback_days = nan\n[budget_kg]\n",
            "half_life_days = 0\n[budget_kg]\n",
            "floor = 2\n[budget_kg]\n",
            "[budget_kg]\nx = -1\n",
            "colour = 1\n[budget_kg]\n",
            "field = \"mine\"\n[budget_kg]\n",
        ] {
            let e = Policy::parse(bad, Path::new("f.toml")).unwrap_err();
            assert!(e.to_string().starts_with("f.toml: "), "{e}");
        }
    }

    #[test]
    fn decay_halves_per_half_life() {
        let p = policy();
        assert_eq!(p.decay(0.0), 1.0);
        assert!((p.decay(7.0 * 86_400.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn jobs_count_by_their_age() {
        let p = policy();
        let seg = crate::record::parse(
            "spank-carbon/1 gpu_wh=1 co2e_g=8 intensity=475 pue=1.58 gpus=2 nodes=2 of=2 \
             node.a=wh:1,gpus:1,co2e:3,m:counter,t:0-100 \
             node.b=wh:1,gpus:1,co2e:5,m:counter,t:0-200",
        )
        .unwrap();
        // Aged from the last node's end, one half-life ago: half of 3 + 5.
        let week = 7.0 * 86_400.0;
        assert!((decayed_g(&p, &seg, 200.0 + week) - 4.0).abs() < 1e-9);
        assert_eq!(decayed_g(&p, &seg, 0.0), 8.0, "no growth for the future");
        assert_eq!(decayed_g(&p, &seg, f64::INFINITY), 0.0);
    }

    #[test]
    fn shares_scale_with_budget_left_bounded_below() {
        let p = policy();
        let current = BTreeMap::from([
            ("research".to_string(), 100),
            ("heavy".to_string(), 100),
            ("other".to_string(), 5),
        ]);
        let usage = BTreeMap::from([
            ("research".to_string(), 25_000.0),
            ("heavy".to_string(), 50_000.0),
        ]);
        let rows = plan(&p, &State::default(), &current, &usage);
        let by: BTreeMap<_, _> = rows.iter().map(|r| (r.account.as_str(), r)).collect();
        assert_eq!(by["research"].new, 75);
        assert_eq!(by["heavy"].new, 10, "over budget: the floor, not zero");
        assert!(
            !by.contains_key("other"),
            "accounts without a budget are left alone"
        );
        assert_eq!(
            by["research"].note.as_deref(),
            Some("first run: base remembered")
        );
    }

    #[test]
    fn base_is_remembered_and_operator_changes_respected() {
        let p = policy();
        let usage = BTreeMap::from([("heavy".to_string(), 5_000.0)]);
        let mut state = State::default();
        state
            .accounts
            .insert("heavy".into(), Owned { base: 100, set: 50 });
        // The tool's own earlier value: base stays 100.
        let rows = plan(
            &p,
            &state,
            &BTreeMap::from([("heavy".to_string(), 50)]),
            &usage,
        );
        assert_eq!((rows[0].base, rows[0].new), (100, 50));
        // The operator set 200 since: that is the new base.
        let rows = plan(
            &p,
            &state,
            &BTreeMap::from([("heavy".to_string(), 200)]),
            &usage,
        );
        assert_eq!((rows[0].base, rows[0].new), (200, 100));
        assert!(rows[0].note.is_some());
    }
}
