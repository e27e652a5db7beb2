//! The Slurm version of the build, and the behaviours that depend on it.

use std::fmt;

/// A Slurm release: `major.minor.micro` (`24.11.5`; the year, the month, the patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlurmVersion {
    pub major: u8,
    pub minor: u8,
    pub micro: u8,
}

impl SlurmVersion {
    pub const fn new(major: u8, minor: u8, micro: u8) -> SlurmVersion {
        SlurmVersion {
            major,
            minor,
            micro,
        }
    }

    /// From `SLURM_VERSION_NUMBER` (`0xMMmmuu`, as in slurm_version.h).
    pub const fn from_number(n: u32) -> SlurmVersion {
        SlurmVersion::new((n >> 16) as u8, (n >> 8) as u8, n as u8)
    }

    /// The version whose headers this build used.
    pub const fn built() -> SlurmVersion {
        SlurmVersion::from_number(crate::slurm::sys::SLURM_VERSION_NUMBER)
    }

    /// Parses `26.05.5`, `26.05` (micro 0), or `slurmd -V` / `sinfo -V` output such as
    /// `slurm 24.11.5` or `slurm-wlm 24.11.5` (a suffix such as `-1` or `-rc1` after the
    /// micro number is ignored).
    pub fn parse(text: &str) -> Option<SlurmVersion> {
        let text = text.trim();
        let word = match text.split_once(char::is_whitespace) {
            Some((name, rest)) if name.starts_with("slurm") => rest.trim(),
            Some(_) => return None,
            None => text,
        };
        if word.contains(char::is_whitespace) {
            return None;
        }
        let mut it = word.splitn(3, '.');
        let num = |s: &str| -> Option<u8> {
            (!s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let major = num(it.next()?)?;
        let minor = num(it.next()?)?;
        let micro = match it.next() {
            None => 0,
            Some(m) => {
                let digits = m.find(|c: char| !c.is_ascii_digit()).unwrap_or(m.len());
                let (n, rest) = m.split_at(digits);
                if !(rest.is_empty() || rest.starts_with(['-', '+', '~'])) {
                    return None;
                }
                num(n)?
            }
        };
        Some(SlurmVersion::new(major, minor, micro))
    }

    const fn at_least(self, major: u8, minor: u8) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }
}

impl fmt::Display for SlurmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}.{}", self.major, self.minor, self.micro)
    }
}

/// What spank-carbon must do differently on a Slurm release, derived only from its
/// version ([`Differences::for_version`]). Each field says what holds from which release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Differences {
    pub version: SlurmVersion,
    /// Before 23.02: sacctmgr lower-cases every ASCII letter of the values it sets.
    pub lowercases: bool,
    /// 25.05+: sacctmgr trims leading and trailing whitespace of the values it sets.
    pub trims_whitespace: bool,
    /// 25.05+: sacctmgr prints " Modified jobs..." before it knows the outcome: only its
    /// exit status says whether the change was made.
    pub exit_status_only: bool,
    /// 25.11+: `sacctmgr modify job where jobid=N set tres=energy=J` sets the job's
    /// energy TRES (below 25.11 `tres=` is an unknown option, and 24.11 still writes the
    /// other values of the same call and exits 0).
    pub energy_tres: bool,
    /// 25.11+: the prolog/epilog environment has SLURM_JOB_SLUID.
    pub sluid: bool,
    /// 24.05+: `PrologFlags=RunInJob` exists, and under it SPANK job_prolog/job_epilog
    /// never run.
    pub run_in_job: bool,
    /// 24.05+: cgroup.conf accepts `CgroupPlugin=disabled`.
    pub cgroup_disabled: bool,
    /// 24.11+: slurmd reads the prolog/epilog's stdout and stderr to EOF, so no child
    /// they spawn may keep them open.
    pub stdout_read_to_eof: bool,
    /// 23.11+: `sacctmgr modify job where jobid=N` changes only the most recently
    /// submitted row whose own id is N (and, when that row is an array or het job, its
    /// tasks or components). Before, it also changed the tasks of an older array, and the
    /// components of an older het job, whose array or het id was N. Slurm's
    /// as_mysql_jobacct_process.c `_cluster_get_jobs` (commit 3b6f268783, "Don't display
    /// old job_arrays/het_jobs in sacct if Job ID was reused", first in 23.11.0): without
    /// `--duplicates` and with a job id given, rows whose array or het id is not the kept
    /// row's are dropped, and `as_mysql_modify_job` changes exactly the rows that query
    /// keeps. The StartTime/EndTime of the WHERE select nothing once a jobid is given
    /// (JOBCOND_FLAG_NO_DEFAULT_USAGE), on every release. The filter works on rows ordered
    /// by id: a task whose own id is below N (ids wrapped at MaxJobId) is still changed.
    pub jobid_newest_only: bool,
    /// How slurmctld's job structure (per-node GRES) is read as JSON: 23.02+ `scontrol
    /// --json show job JOB`; 22.05 has no `scontrol --json`, only `squeue --json`, which
    /// dumps every job (it ignores `-j`); before 22.05 none is read (a refusal).
    pub job_json: JobJson,
}

/// The tool that gives slurmctld's job structure as JSON ([`Differences::job_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobJson {
    /// No JSON this plugin reads.
    None,
    /// `squeue --json`: every job slurmctld holds (22.05, openapi v0.0.38).
    SqueueAll,
    /// `scontrol --json show job JOB` (23.02+).
    Scontrol,
}

impl Differences {
    pub const fn for_version(v: SlurmVersion) -> Differences {
        Differences {
            version: v,
            lowercases: !v.at_least(23, 2),
            trims_whitespace: v.at_least(25, 5),
            exit_status_only: v.at_least(25, 5),
            energy_tres: v.at_least(25, 11),
            sluid: v.at_least(25, 11),
            run_in_job: v.at_least(24, 5),
            cgroup_disabled: v.at_least(24, 5),
            stdout_read_to_eof: v.at_least(24, 11),
            jobid_newest_only: v.at_least(23, 11),
            job_json: if v.at_least(23, 2) {
                JobJson::Scontrol
            } else if v.at_least(22, 5) {
                JobJson::SqueueAll
            } else {
                JobJson::None
            },
        }
    }

    /// The differences of the Slurm this build targets.
    pub const fn built() -> Differences {
        Differences::for_version(SlurmVersion::built())
    }

    /// One line per difference in force (for `spank-carbon check`; docs/REFERENCE.md has the whole table).
    pub fn describe(&self) -> Vec<&'static str> {
        let mut lines = Vec::new();
        let mut say = |on: bool, line: &'static str| {
            if on {
                lines.push(line);
            }
        };
        say(
            self.lowercases,
            "before 23.02: sacctmgr lower-cases values; a field with capitals is not rewritten (record kept pending)",
        );
        say(
            self.job_json == JobJson::SqueueAll,
            "before 23.02: scontrol has no --json; on gres/shard, gres/mps and several-type GPU nodes the sampler reads the job's GRES from `squeue --json` (every job: it ignores -j)",
        );
        say(
            self.jobid_newest_only,
            "23.11+: sacctmgr's jobid=N changes only the newest job with id N: a job whose id an older array or het job had gets its record",
        );
        say(
            self.run_in_job,
            "24.05+: PrologFlags=RunInJob disables SPANK job_prolog/job_epilog; do not set it",
        );
        say(
            self.cgroup_disabled,
            "24.05+: CgroupPlugin=disabled is accepted in cgroup.conf",
        );
        say(
            self.stdout_read_to_eof,
            "24.11+: slurmd reads prolog/epilog output to EOF; the sampler and courier are started with no inherited descriptors",
        );
        say(
            self.trims_whitespace,
            "25.05+: sacctmgr trims leading/trailing whitespace; a field whose other text starts or ends with whitespace is not rewritten (record kept pending)",
        );
        say(
            self.exit_status_only,
            "25.05+: sacctmgr prints \"Modified jobs\" before the outcome; only its exit status is trusted",
        );
        say(
            self.energy_tres,
            "25.11+: the record's GPU energy is also set as the job's energy TRES (sacctmgr tres=energy=J; see energy_tres)",
        );
        say(
            self.sluid,
            "25.11+: the job's SLUID (SLURM_JOB_SLUID) is kept in the local and pending records and the record (sluid=)",
        );
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(major: u8, minor: u8) -> Differences {
        Differences::for_version(SlurmVersion::new(major, minor, 0))
    }

    /// `field` is off at `before` and on at `from` (or the reverse for `lowercases`).
    fn boundary(field: fn(&Differences) -> bool, before: (u8, u8), from: (u8, u8)) {
        assert!(!field(&d(before.0, before.1)), "{before:?}");
        assert!(field(&d(from.0, from.1)), "{from:?}");
        // And it stays so later, and earlier.
        assert!(field(&d(26, 5)) && field(&d(from.0 + 1, 2)));
        assert!(!field(&d(22, 5)) && !field(&d(before.0, before.1.saturating_sub(3))));
    }

    #[test]
    fn parses_numbers_strings_and_slurmd_output() {
        assert_eq!(
            SlurmVersion::from_number(0x1a_05_05),
            SlurmVersion::new(26, 5, 5)
        );
        assert_eq!(
            SlurmVersion::parse("26.05.5"),
            Some(SlurmVersion::new(26, 5, 5))
        );
        assert_eq!(
            SlurmVersion::parse("slurm 24.11.5\n"),
            Some(SlurmVersion::new(24, 11, 5))
        );
        assert_eq!(
            SlurmVersion::parse("slurm-wlm 24.11.5"),
            Some(SlurmVersion::new(24, 11, 5))
        );
        assert_eq!(
            SlurmVersion::parse("22.05"),
            Some(SlurmVersion::new(22, 5, 0))
        );
        assert_eq!(
            SlurmVersion::parse("25.11.0-0rc1"),
            Some(SlurmVersion::new(25, 11, 0))
        );
        for bad in [
            "",
            "slurm",
            "24",
            "24.x.1",
            "foo 24.11.5",
            "24.11.5x",
            "slurm 24.11.5 extra",
            "1000.1.1",
        ] {
            assert_eq!(SlurmVersion::parse(bad), None, "{bad:?}");
        }
        // Display and parse agree, and the built version is the headers' string.
        let v = SlurmVersion::built();
        assert_eq!(SlurmVersion::parse(&v.to_string()), Some(v));
        assert_eq!(v.to_string(), crate::SLURM_VERSION);
        assert!(SlurmVersion::new(24, 11, 5) < SlurmVersion::new(25, 5, 0));
    }

    #[test]
    fn lowercases_before_23_02() {
        assert!(d(23, 1).lowercases && d(22, 5).lowercases);
        assert!(!d(23, 2).lowercases && !d(26, 5).lowercases);
    }

    #[test]
    fn trims_whitespace_from_25_05() {
        boundary(|x| x.trims_whitespace, (25, 4), (25, 5));
        assert!(!d(24, 11).trims_whitespace);
    }

    #[test]
    fn exit_status_only_from_25_05() {
        boundary(|x| x.exit_status_only, (25, 4), (25, 5));
    }

    #[test]
    fn energy_tres_from_25_11() {
        boundary(|x| x.energy_tres, (25, 5), (25, 11));
        assert!(!d(25, 10).energy_tres && !d(24, 11).energy_tres);
    }

    #[test]
    fn sluid_from_25_11() {
        boundary(|x| x.sluid, (25, 10), (25, 11));
    }

    #[test]
    fn run_in_job_from_24_05() {
        boundary(|x| x.run_in_job, (24, 4), (24, 5));
    }

    #[test]
    fn cgroup_disabled_from_24_05() {
        boundary(|x| x.cgroup_disabled, (24, 4), (24, 5));
    }

    #[test]
    fn stdout_read_to_eof_from_24_11() {
        boundary(|x| x.stdout_read_to_eof, (24, 5), (24, 11));
    }

    #[test]
    fn jobid_newest_only_from_23_11() {
        boundary(|x| x.jobid_newest_only, (23, 2), (23, 11));
        assert!(!d(23, 10).jobid_newest_only && d(24, 11).jobid_newest_only);
    }

    #[test]
    fn job_json_from_scontrol_from_23_02_and_squeue_on_22_05() {
        assert_eq!(d(22, 5).job_json, JobJson::SqueueAll);
        assert_eq!(d(23, 1).job_json, JobJson::SqueueAll);
        assert_eq!(d(23, 2).job_json, JobJson::Scontrol);
        assert_eq!(d(24, 11).job_json, JobJson::Scontrol);
        assert_eq!(d(26, 5).job_json, JobJson::Scontrol);
        assert_eq!(d(21, 8).job_json, JobJson::None);
    }

    #[test]
    fn describe_lists_exactly_the_differences_in_force() {
        assert_eq!(d(22, 5).describe().len(), 2);
        assert!(d(22, 5).describe()[0].contains("lower-cases"));
        assert!(d(22, 5).describe()[1].contains("squeue --json"));
        let on = d(26, 5).describe();
        assert_eq!(on.len(), 8);
        assert!(on.iter().all(|l| !l.contains("lower-cases")));
        let mid = d(24, 11).describe();
        assert_eq!(mid.len(), 4, "{mid:?}");
        assert!(mid.iter().any(|l| l.contains("jobid=N")));
        assert!(mid.iter().any(|l| l.contains("EOF")));
        assert!(!mid.iter().any(|l| l.contains("TRES")));
    }
}
