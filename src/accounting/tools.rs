//! The job accounting database through Slurm's own tools: sacct reads, sacctmgr writes,
//! squeue names jobs as slurmctld does.

use std::path::PathBuf;
use std::time::Duration;

use super::rows::{self, valid_job_selector, Rows};
use super::{Accounting, AcctError, PARALLEL_WRITES};
use crate::core::config::Field;
use crate::slurm::run::{run_tool, run_tool_env, CmdOutput, RunError};
use crate::slurm::Differences;

/// Slurm's own tools, run by absolute path with an argument vector and a time limit.
pub struct SlurmTools {
    pub sacct: PathBuf,
    pub sacctmgr: PathBuf,
    pub squeue: PathBuf,
    pub timeout: Duration,
    /// The Slurm these tools are (the build's).
    pub diffs: Differences,
}

/// sacctmgr's arguments that set `field` of job `id` to `value`, and its energy TRES to
/// `energy_j` joules where given. `tres=` is never sent to a Slurm below 25.11 (24.11
/// reports it as an unknown option, still writes the rest and exits 0).
pub fn sacctmgr_args(
    id: &str,
    field: Field,
    value: &str,
    energy_j: Option<u64>,
    diffs: &Differences,
) -> Result<Vec<String>, AcctError> {
    if !valid_job_selector(id) {
        return Err(AcctError::Failed {
            tool: "sacctmgr".into(),
            detail: format!("`{id}` is not a job"),
        });
    }
    let mut args: Vec<String> = ["-i", "modify", "job", "where"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("jobid={id}"));
    args.push("set".into());
    args.push(format!("{}={}", field.slurm_name(), value));
    if let Some(j) = energy_j {
        if !diffs.energy_tres {
            return Err(AcctError::Failed {
                tool: "sacctmgr".into(),
                detail: format!(
                    "Slurm {} cannot set the energy TRES (25.11 and later can)",
                    diffs.version
                ),
            });
        }
        args.push(format!("tres=energy={j}"));
    }
    Ok(args)
}

/// Whether sacctmgr changed exactly the one row of `id`, from its exit status and output.
/// It lists each row it changed (`  <id> submitted at <time>`, still so in 26.05): more
/// than one is an error on every version. Before 25.05 success also needs "Modified";
/// from 25.05 on it prints " Modified jobs..." before knowing the outcome, and exits
/// non-zero on failure ("Nothing modified" and commit errors included): the exit status
/// decides.
pub fn write_succeeded(diffs: &Differences, success: bool, stdout: &str) -> Result<(), String> {
    let changed = stdout
        .lines()
        .filter(|l| l.contains(" submitted at "))
        .count();
    if changed > 1 {
        return Err(format!(
            "changed {changed} rows, not one: {}",
            stdout.trim().replace('\n', "; ")
        ));
    }
    let ok = if diffs.exit_status_only {
        success
    } else {
        success && stdout.contains("Modified") && changed == 1
    };
    if ok {
        Ok(())
    } else {
        Err(String::new())
    }
}

fn detail(out: &CmdOutput) -> String {
    let text = String::from_utf8_lossy(if out.stderr.is_empty() {
        &out.stdout
    } else {
        &out.stderr
    });
    let text = text.trim().replace('\n', "; ");
    format!(
        "{} ({})",
        text.chars().take(300).collect::<String>(),
        out.status
    )
}

/// Job states of a job that has ended (sacct once slurmctld's completion record is in
/// the database; squeue while slurmctld still remembers the job).
pub const ENDED: [&str; 9] = [
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

impl Accounting for SlurmTools {
    fn read(&self, jobs: &[u32], field: Field) -> Result<Rows, AcctError> {
        if jobs.is_empty() {
            return Ok(Rows::new());
        }
        let list = jobs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let format = format!("{},{}", rows::COLUMNS, field.slurm_name());
        let delim = crate::slurm::sacct_rows::nonce().map_err(|source| RunError::Spawn {
            tool: "the random source".into(),
            source,
        })?;
        let delim_arg = crate::slurm::sacct_rows::delimiter_arg(&delim);
        let out = run_tool_env(
            &self.sacct,
            &[
                "-n", "-P", &delim_arg, "-D", "-X", "-j", &list, "-o", &format,
            ],
            &[("SLURM_TIME_FORMAT", "%s")],
            self.timeout,
        )?;
        if !out.status.success() {
            return Err(AcctError::Failed {
                tool: "sacct".into(),
                detail: detail(&out),
            });
        }
        rows::parse(jobs, &out.stdout, &delim)
    }

    fn write(&self, id: &str, field: Field, value: &str) -> Result<(), AcctError> {
        self.write_energy(id, field, value, None)
    }

    fn write_energy(
        &self,
        id: &str,
        field: Field,
        value: &str,
        energy_j: Option<u64>,
    ) -> Result<(), AcctError> {
        let args = sacctmgr_args(id, field, value, energy_j, &self.diffs)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_tool(&self.sacctmgr, &args, self.timeout)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match write_succeeded(&self.diffs, out.status.success(), &stdout) {
            Ok(()) => Ok(()),
            Err(why) => {
                if !why.is_empty() {
                    log::error!("sacctmgr jobid={id} {why}");
                }
                Err(AcctError::Failed {
                    tool: "sacctmgr".into(),
                    detail: detail(&out),
                })
            }
        }
    }

    fn ctld_names(
        &self,
        jobs: &[u32],
    ) -> Result<std::collections::BTreeMap<u32, String>, AcctError> {
        let mut names = std::collections::BTreeMap::new();
        if jobs.is_empty() {
            return Ok(names);
        }
        let list = jobs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let out = run_tool(
            &self.squeue,
            &["-h", "-t", "all", "-j", &list, "-o", "%A|%i"],
            self.timeout,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // One id that slurmctld no longer knows: "Invalid job id specified".
            if jobs.len() == 1 && String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
                return Ok(names);
            }
            return Err(AcctError::Failed {
                tool: "squeue".into(),
                detail: detail(&out),
            });
        }
        for line in stdout.lines() {
            if let Some((raw, id)) = line.trim().split_once('|') {
                if let Ok(raw) = raw.parse::<u32>() {
                    names.insert(raw, id.to_string());
                }
            }
        }
        Ok(names)
    }

    /// Up to [`PARALLEL_WRITES`] sacctmgr at a time: each waits about a quarter of a
    /// second on slurmdbd while costing almost no CPU, so a burst of records goes out
    /// several times faster than one after the other.
    fn write_all(&self, writes: &[(&str, &str)], field: Field) -> Vec<Result<(), AcctError>> {
        let with: Vec<(&str, &str, Option<u64>)> =
            writes.iter().map(|(id, v)| (*id, *v, None)).collect();
        self.write_all_energy(&with, field)
    }

    fn write_all_energy(
        &self,
        writes: &[(&str, &str, Option<u64>)],
        field: Field,
    ) -> Vec<Result<(), AcctError>> {
        let mut results = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(PARALLEL_WRITES) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(id, value, e)| {
                        scope.spawn(move || self.write_energy(id, field, value, *e))
                    })
                    .collect();
                for h in handles {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(AcctError::Failed {
                            tool: "sacctmgr".into(),
                            detail: "the writer thread panicked".into(),
                        })
                    }));
                }
            });
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::testkit::{merged_one, policy};
    use crate::accounting::{energy_plan, EnergyPlan, EnergyRow};
    use crate::core::config::EnergyTres;

    #[test]
    fn tres_is_never_sent_below_25_11() {
        let v24 = policy(24, 11, EnergyTres::Overwrite).diffs;
        let v26 = policy(26, 5, EnergyTres::Auto).diffs;
        assert!(sacctmgr_args("9", Field::System, "x", Some(5), &v24).is_err());
        let plain = sacctmgr_args("9", Field::System, "x", None, &v24).unwrap();
        assert!(plain.iter().all(|a| !a.contains("tres")), "{plain:?}");
        assert_eq!(plain.last().unwrap(), "SystemComment=x");
        let with = sacctmgr_args("9_2", Field::System, "x", Some(7200), &v26).unwrap();
        assert_eq!(
            with[with.len() - 3..],
            ["set", "SystemComment=x", "tres=energy=7200"]
        );
        assert!(sacctmgr_args("9 or 1=1", Field::System, "x", None, &v26).is_err());
        // This build: tres= goes out exactly when its Slurm is 25.11 or later.
        let built = Differences::built();
        let sent = sacctmgr_args("9", Field::System, "x", Some(1), &built)
            .is_ok_and(|a| a.iter().any(|x| x == "tres=energy=1"));
        assert_eq!(
            sent,
            built.version >= crate::slurm::SlurmVersion::new(25, 11, 0)
        );
        // The courier's round, with any energy_tres setting, never asks for tres= there.
        for mode in [EnergyTres::Auto, EnergyTres::Overwrite] {
            let p = policy(25, 5, mode);
            assert!(!p.sets_energy());
            let row = EnergyRow {
                own_run: true,
                ..EnergyRow::default()
            };
            let plan = energy_plan(&p, row, "", &merged_one(2.0), 0);
            assert_eq!(plan, EnergyPlan::Leave);
        }
    }

    #[test]
    fn sacctmgrs_outcome_by_version() {
        let v22 = policy(22, 5, EnergyTres::Auto).diffs;
        let v26 = policy(26, 5, EnergyTres::Auto).diffs;
        let one = " Modified jobs...\n  9 submitted at 2026-12-01T10:00:00\n";
        let two = " Modified jobs...\n  9 submitted at x\n  9 submitted at y\n";
        for v in [&v22, &v26] {
            assert!(write_succeeded(v, true, one).is_ok());
            assert!(write_succeeded(v, true, two)
                .unwrap_err()
                .contains("2 rows"));
        }
        // 26.05 prints " Modified jobs..." before the outcome: the exit status decides.
        assert!(write_succeeded(&v26, false, " Modified jobs...\n  Nothing modified\n").is_err());
        assert!(write_succeeded(&v26, false, one).is_err());
        assert!(write_succeeded(&v26, true, "").is_ok());
        // 22.05: success also needs the listing of the one row.
        assert!(write_succeeded(&v22, true, "").is_err());
        assert!(write_succeeded(&v22, false, one).is_err());
    }
}
