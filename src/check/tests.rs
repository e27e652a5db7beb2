//! Each item's diagnosis on a healthy node, then broken one way at a time: the finding
//! turns to an error or warning and says what to change.

use std::path::{Path, PathBuf};

use super::conf::{Kind, PlugLine, Plugstack, SlurmConf};
use super::*;

const SO: &str = "/usr/local/lib/spank-carbon/libspank_carbon.so";

fn root_dir() -> FileMeta {
    FileMeta {
        uid: 0,
        mode: 0o40700,
        is_dir: true,
        is_file: false,
        is_symlink: false,
    }
}

fn root_file(mode: u32) -> FileMeta {
    FileMeta {
        uid: 0,
        mode: 0o100000 | mode,
        is_dir: false,
        is_file: true,
        is_symlink: false,
    }
}

fn line(kind: Kind, args: &[&str]) -> PlugLine {
    PlugLine {
        file: PathBuf::from("/etc/slurm/plugstack.conf"),
        line: 1,
        kind,
        plugin: SO.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn gpu(minor: u32, counter: Option<u64>) -> NvmlGpu {
    NvmlGpu {
        minor,
        uuid: format!("GPU-{minor:08x}-0000"),
        name: "NVIDIA H100".into(),
        counter: Ok(counter),
        shared: false,
    }
}

/// A node on which everything is right.
fn facts() -> Facts {
    let conf = Path::new("/etc/slurm/slurm.conf");
    let state = PathBuf::from("/var/lib/spank-carbon");
    Facts {
        built_for: crate::SLURM_VERSION.into(),
        node: Some("node1".into()),
        slurmd: Slurmd::Found {
            path: "/usr/sbin/slurmd".into(),
            output: Ok(format!("slurm {}", crate::SLURM_VERSION)),
        },
        slurm_conf_path: conf.into(),
        slurm_conf: Ok(SlurmConf::from_pairs(
            conf,
            &[("ClusterName", "c"), ("PrologFlags", "Alloc,Contain")],
        )),
        plugstack_path: "/etc/slurm/plugstack.conf".into(),
        plugstack: Ok(Plugstack {
            lines: vec![line(Kind::Optional, &["intensity=350", "pue=1.3"])],
            problems: vec![],
        }),
        libraries: vec![(SO.into(), Some(root_file(0o755)))],
        library_dirs: vec![(
            "/usr/local/lib/spank-carbon".into(),
            Some(FileMeta {
                mode: 0o40755,
                ..root_dir()
            }),
        )],
        gpus: Gpus {
            gres_conf: "/etc/slurm/gres.conf".into(),
            autodetect: None,
            indices: Ok(vec![
                vec![("/dev/nvidia0".into(), Ok(0))],
                vec![("/dev/nvidia1".into(), Ok(1))],
            ]),
            nvml: Nvml::Opened {
                driver: "550.54.15".into(),
                gpus: vec![gpu(1, Some(7)), gpu(0, Some(5))],
            },
        },
        state: StateFacts {
            template: state.display().to_string(),
            resolved: Ok(state.clone()),
            dirs: vec![
                (state.clone(), Some(root_dir())),
                (state.join("jobs"), Some(root_dir())),
            ],
            entry_check: Some(Ok(())),
            ancestor: None,
        },
        accounting: AccountingFacts {
            sacctmgr: "/usr/bin/sacctmgr".into(),
            sacctmgr_meta: Some(root_file(0o755)),
            sacct: "/usr/bin/sacct".into(),
            sacct_meta: Some(root_file(0o755)),
            euid: 0,
            user: Some("root".into()),
            slurm_user: "slurm".into(),
            admin_level: None,
            dbd: Some(Ok(())),
            field: Field::System,
            store_flags: None,
        },
        differences: vec!["sacctmgr keeps case".into()],
    }
}

fn find<'a>(fs: &'a [Finding], check: &str) -> &'a Finding {
    fs.iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {fs:#?}"))
}

/// The one finding that is not ok, which must be `status` for `check`.
fn only_problem(f: &Facts, check: &str, status: Status) -> Finding {
    let bad: Vec<Finding> = diagnose(f)
        .into_iter()
        .filter(|x| x.status != Status::Ok)
        .collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].check, check, "{bad:#?}");
    assert_eq!(bad[0].status, status, "{bad:#?}");
    assert!(bad[0].fix.as_deref().is_some_and(|x| !x.is_empty()));
    bad[0].clone()
}

fn other_version() -> String {
    let (major, minor) = major_minor(crate::SLURM_VERSION).unwrap();
    format!("slurm {}.{:02}.1", major + 1, minor)
}

#[test]
fn a_healthy_node_passes() {
    let findings = diagnose(&facts());
    assert!(
        findings
            .iter()
            .all(|f| f.status == Status::Ok && f.fix.is_none()),
        "{findings:#?}"
    );
    assert!(!failed(&findings));
    // One finding per gres index, naming the NVML GPU of its minor (not NVML's order).
    let gpus: Vec<&Finding> = findings.iter().filter(|f| f.check == "gpu").collect();
    assert_eq!(gpus.len(), 2);
    assert!(gpus[0].detail.contains("gres index 0") && gpus[0].detail.contains("GPU-00000000"));
    assert!(
        gpus[1].detail.contains("GPU-00000001"),
        "{}",
        gpus[1].detail
    );
    assert!(find(&findings, "version differences")
        .detail
        .contains("keeps case"));
}

#[test]
fn slurm_version_mismatch_is_an_error_missing_slurmd_a_warning() {
    let mut f = facts();
    f.slurmd = Slurmd::Found {
        path: "/usr/sbin/slurmd".into(),
        output: Ok(other_version()),
    };
    let e = only_problem(&f, "slurm version", Status::Error);
    assert!(e.detail.contains("verbose-level"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("SLURM_INCLUDE_DIR"));
    // Another micro release is fine.
    let (major, minor) = major_minor(crate::SLURM_VERSION).unwrap();
    f.slurmd = Slurmd::Found {
        path: "/usr/sbin/slurmd".into(),
        output: Ok(format!("slurm {major}.{minor:02}.99")),
    };
    assert!(!failed(&diagnose(&f)));
    f.slurmd = Slurmd::Missing {
        tried: vec!["/usr/sbin/slurmd".into()],
    };
    let w = only_problem(&f, "slurm version", Status::Warning);
    assert!(w.detail.contains("/usr/sbin/slurmd"));
    f.slurmd = Slurmd::Found {
        path: "/usr/sbin/slurmd".into(),
        output: Ok("no version here".into()),
    };
    only_problem(&f, "slurm version", Status::Warning);
}

#[test]
fn prolog_flags_without_alloc_or_with_run_in_job_are_errors() {
    let conf = Path::new("/etc/slurm/slurm.conf");
    let mut f = facts();
    f.slurm_conf = Ok(SlurmConf::from_pairs(conf, &[("PrologFlags", "Serial")]));
    let e = only_problem(&f, "PrologFlags", Status::Error);
    assert!(e.detail.contains("first step"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("add Alloc"));
    f.slurm_conf = Ok(SlurmConf::from_pairs(conf, &[]));
    let e = only_problem(&f, "PrologFlags", Status::Error);
    assert!(e.detail.contains("(not set)"), "{}", e.detail);
    f.slurm_conf = Ok(SlurmConf::from_pairs(
        conf,
        &[("prologflags", "alloc,runinjob")],
    ));
    let e = only_problem(&f, "PrologFlags", Status::Error);
    assert!(
        e.detail.contains("never runs SPANK job_prolog"),
        "{}",
        e.detail
    );
    assert!(e.fix.unwrap().contains("remove RunInJob"));
    // Contain implies Alloc.
    f.slurm_conf = Ok(SlurmConf::from_pairs(conf, &[("PrologFlags", "contain")]));
    assert!(!failed(&diagnose(&f)));
    // An unreadable slurm.conf is an error of its own, PrologFlags a warning.
    f.slurm_conf = Err("/etc/slurm/slurm.conf: permission denied".into());
    let d = diagnose(&f);
    assert_eq!(find(&d, "slurm.conf").status, Status::Error);
    assert_eq!(find(&d, "PrologFlags").status, Status::Warning);
}

#[test]
fn plugstack_without_the_plugin_or_with_it_twice_is_an_error() {
    let mut f = facts();
    f.plugstack = Ok(Plugstack::default());
    f.libraries.clear();
    f.library_dirs.clear();
    let e = only_problem(&f, "plugstack.conf", Status::Error);
    assert!(e.detail.contains("no line names libspank_carbon.so"));
    assert!(e.fix.unwrap().contains("optional /usr/local/lib"));
    f.plugstack = Err("/etc/slurm/plugstack.conf: No such file".into());
    only_problem(&f, "plugstack.conf", Status::Error);
    let mut f = facts();
    let mut second = line(Kind::Optional, &[]);
    second.file = "/etc/slurm/plugstack.conf.d/x.conf".into();
    f.plugstack.as_mut().unwrap().lines.push(second);
    let e = only_problem(&f, "plugstack.conf", Status::Error);
    assert!(
        e.detail.contains("2 times") && e.detail.contains("x.conf:1"),
        "{}",
        e.detail
    );
}

#[test]
fn required_is_a_warning() {
    let mut f = facts();
    f.plugstack.as_mut().unwrap().lines[0].kind = Kind::Required;
    let w = only_problem(&f, "plugstack.conf", Status::Warning);
    assert!(w.fix.unwrap().contains("optional"));
}

#[test]
fn bad_arguments_are_reported_with_the_parsers_message() {
    let mut f = facts();
    f.plugstack.as_mut().unwrap().lines[0].args = vec!["intensty=300".into()];
    let e = only_problem(&f, "plugin arguments", Status::Error);
    assert!(e.detail.contains("unknown key `intensty`"), "{}", e.detail);
    assert!(e.detail.contains("does nothing"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("restart slurmd"));
    f.plugstack.as_mut().unwrap().lines[0].args = vec!["pue=0.3".into()];
    let e = only_problem(&f, "plugin arguments", Status::Error);
    assert!(e.detail.contains("`pue`"), "{}", e.detail);
}

#[test]
fn library_must_exist_and_be_roots_alone() {
    let mut f = facts();
    f.libraries[0].1 = None;
    let e = only_problem(&f, "plugin library", Status::Error);
    assert!(e.detail.contains("does not exist"));
    f.libraries[0].1 = Some(root_file(0o775));
    let e = only_problem(&f, "plugin library", Status::Error);
    assert!(e.fix.unwrap().starts_with("chmod go-w"));
    f.libraries[0].1 = Some(FileMeta {
        uid: 1000,
        ..root_file(0o755)
    });
    let e = only_problem(&f, "plugin library", Status::Error);
    assert!(e.fix.unwrap().starts_with("chown root"));
    // Its directory too: whoever writes there can swap the library.
    let mut f = facts();
    f.library_dirs[0].1 = Some(FileMeta {
        mode: 0o40777,
        ..root_dir()
    });
    let e = only_problem(&f, "plugin library", Status::Error);
    assert!(
        e.detail
            .contains("/usr/local/lib/spank-carbon (uid 0, mode 777)"),
        "{}",
        e.detail
    );
}

#[test]
fn gpus_must_map_to_nvml() {
    let mut f = facts();
    f.gpus.nvml = Nvml::Failed("libnvidia-ml.so.1: cannot open".into());
    let e = only_problem(&f, "gpus", Status::Error);
    assert!(e.detail.contains("lists 2 GPU(s)"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("nvml_lib"));
    // No GPU in gres.conf and none in NVML: nothing to do; NVML missing there is a warning.
    f.gpus.indices = Err("/etc/slurm/gres.conf: No such file".into());
    only_problem(&f, "gpus", Status::Warning);
    // NVML sees GPUs that gres.conf does not give: an error (jobs are not measured).
    let mut f = facts();
    f.gpus.indices = Err("/etc/slurm/gres.conf: No such file".into());
    only_problem(&f, "gpus", Status::Error);
    f.gpus.indices = Ok(vec![]);
    only_problem(&f, "gpus", Status::Warning);
    // A node without GPUs: fine with NVML there, a warning without.
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![],
    };
    assert!(diagnose(&f).iter().all(|x| x.status == Status::Ok));
    f.gpus.nvml = Nvml::Failed("no libnvidia-ml".into());
    let w = only_problem(&f, "gpus", Status::Warning);
    assert!(w.detail.contains("no libnvidia-ml"));
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, Some(1))],
    };
    f.gpus.autodetect = Some("nvml".into());
    let e = only_problem(&f, "gpus", Status::Error);
    assert!(e.detail.contains("AutoDetect=nvml"));
    // A minor NVML does not know.
    let mut f = facts();
    f.gpus.indices.as_mut().unwrap()[1][0].1 = Ok(7);
    let e = only_problem(&f, "gpu", Status::Error);
    assert!(
        e.detail.contains("gres index 1") && e.detail.contains("minor 7"),
        "{}",
        e.detail
    );
    // A file that is not a device.
    let mut f = facts();
    f.gpus.indices.as_mut().unwrap()[0][0].1 = Err("not a character device".into());
    only_problem(&f, "gpu", Status::Error);
    // No energy counter: measured by sampling, a warning.
    let mut f = facts();
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, None), gpu(1, Some(1))],
    };
    let w = only_problem(&f, "gpu", Status::Warning);
    assert!(w.detail.contains("no energy counter"));
    f.gpus.nvml = Nvml::TimedOut("listing the GPUs".into());
    only_problem(&f, "gpus", Status::Error);
}

#[test]
fn state_dir_must_be_private_to_root() {
    let mut f = facts();
    f.state.dirs[1].1 = Some(FileMeta {
        mode: 0o40777,
        ..root_dir()
    });
    let e = only_problem(&f, "state_dir", Status::Error);
    assert!(e.detail.contains("/var/lib/spank-carbon/jobs") && e.detail.contains("writable"));
    let mut f = facts();
    f.state.dirs[0].1 = Some(FileMeta {
        uid: 1000,
        ..root_dir()
    });
    only_problem(&f, "state_dir", Status::Error);
    // The entry points' own check speaks for itself.
    let mut f = facts();
    f.state.entry_check = Some(Err("state directory /x: owned by another user".into()));
    let e = only_problem(&f, "state_dir", Status::Error);
    assert!(e.detail.contains("owned by another user"));
    // Missing under a root-owned parent: the prolog makes it.
    let mut f = facts();
    f.state.dirs = vec![("/var/lib/spank-carbon".into(), None)];
    f.state.ancestor = Some(("/var/lib".into(), root_dir()));
    assert!(!failed(&diagnose(&f)));
    f.state.ancestor = Some((
        "/var/lib".into(),
        FileMeta {
            uid: 1000,
            ..root_dir()
        },
    ));
    only_problem(&f, "state_dir", Status::Error);
    // `%n` with no node known.
    let mut f = facts();
    f.state.template = "/var/lib/sc/%n".into();
    f.state.resolved = Err("bad value for `state_dir`: needs the node's name".into());
    let e = only_problem(&f, "state_dir", Status::Error);
    assert!(e.fix.unwrap().contains("--node"));
}

#[test]
fn accounting_rights_dbd_tools_and_field() {
    let mut f = facts();
    f.accounting.dbd = Some(Err("timed out".into()));
    let e = only_problem(&f, "slurmdbd", Status::Error);
    assert!(e.detail.contains("timed out"));
    let mut f = facts();
    f.accounting.sacctmgr_meta = None;
    let e = only_problem(&f, "tools", Status::Error);
    assert!(e.fix.unwrap().contains("sacctmgr="));
    // Not root: an operator is fine, a plain user is warned (the courier runs as root).
    let mut f = facts();
    f.accounting.euid = 1000;
    f.accounting.user = Some("alice".into());
    f.accounting.admin_level = Some(Ok("Operator".into()));
    assert!(!failed(&diagnose(&f)));
    assert_eq!(find(&diagnose(&f), "accounting rights").status, Status::Ok);
    f.accounting.admin_level = Some(Ok("None".into()));
    let w = only_problem(&f, "accounting rights", Status::Warning);
    assert!(w.fix.unwrap().contains("adminlevel=operator"));
    f.accounting.user = Some("slurm".into());
    assert_eq!(find(&diagnose(&f), "accounting rights").status, Status::Ok);
    // field=job without job_comment: sacct would not show it.
    let mut f = facts();
    f.accounting.field = Field::Job;
    only_problem(&f, "field", Status::Error);
    f.accounting.store_flags = Some("job_script,job_comment".into());
    only_problem(&f, "field", Status::Warning);
    f.accounting.field = Field::Admin;
    only_problem(&f, "field", Status::Warning);
}

#[test]
fn slurmd_problems_are_the_ones_that_stop_measuring() {
    let conf = Path::new("/etc/slurm/slurm.conf");
    let good = Ok(SlurmConf::from_pairs(conf, &[("PrologFlags", "Alloc")]));
    let args = vec!["intensity=300".to_string()];
    assert!(slurmd_problems(&args, None, conf, &good).is_empty());
    // `%n` cannot be resolved in slurmd (no node name there): only its syntax counts.
    let n = vec!["state_dir=/var/lib/sc/%n".to_string()];
    assert!(slurmd_problems(&n, None, conf, &good).is_empty());
    let bad_args = vec!["intensty=300".to_string()];
    let p = slurmd_problems(&bad_args, None, conf, &good);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].status, Status::Error);
    assert!(p[0].detail.contains("`intensty`"));
    let run_in_job = Ok(SlurmConf::from_pairs(conf, &[("PrologFlags", "RunInJob")]));
    let p = slurmd_problems(&args, None, conf, &run_in_job);
    assert_eq!(p.len(), 1);
    assert!(p[0].detail.contains("RunInJob"));
    let p = slurmd_problems(&bad_args, None, conf, &Err("unreadable".into()));
    assert_eq!(
        p.iter().map(|f| f.status).collect::<Vec<_>>(),
        [Status::Error, Status::Warning]
    );
}

#[test]
fn text_and_json_output() {
    let mut f = facts();
    f.slurm_conf = Ok(SlurmConf::from_pairs(
        Path::new("/etc/slurm/slurm.conf"),
        &[("PrologFlags", "RunInJob")],
    ));
    let d = diagnose(&f);
    assert!(failed(&d));
    let text = render_text(&d);
    let err_line = text
        .lines()
        .position(|l| l.starts_with("error   PrologFlags"))
        .expect(&text);
    assert!(text
        .lines()
        .nth(err_line + 1)
        .unwrap()
        .trim_start()
        .starts_with("fix: remove RunInJob"));
    assert!(text.ends_with("1 error(s), 0 warning(s)\n"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&render_json(&d)).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), d.len());
    let bad = items.iter().find(|i| i["status"] == "error").unwrap();
    assert_eq!(bad["check"], "PrologFlags");
    assert!(bad["fix"].as_str().unwrap().contains("RunInJob"));
    assert!(items
        .iter()
        .filter(|i| i["status"] == "ok")
        .all(|i| i["fix"].is_null()));
}

#[test]
fn nvml_is_bounded_and_read_by_minor() {
    use crate::gpu::fake::FakeGpu;
    use crate::gpu::{Gpu, GpuError, GpuHost};
    use std::time::Duration;
    struct Host(Vec<FakeGpu>);
    impl GpuHost for Host {
        fn driver(&self) -> String {
            "fake".into()
        }
        fn open_minors(&self, _: &[u32]) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
            unreachable!("check lists every GPU")
        }
        fn open_all(&self) -> Result<Vec<Box<dyn Gpu + '_>>, GpuError> {
            Ok(self
                .0
                .iter()
                .map(|g| {
                    Box::new(FakeGpu {
                        counter: g.counter.clone(),
                        ..*g
                    }) as Box<dyn Gpu>
                })
                .collect())
        }
    }
    fn host(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        let g = |minor| FakeGpu {
            minor,
            power_mw: 1.0,
            counter: std::cell::Cell::new(Some(u64::from(minor) * 10)),
            shared: false,
            fail_power: false,
        };
        Ok(Box::new(Host(vec![g(3), g(1)])))
    }
    fn hangs(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        std::thread::sleep(Duration::from_secs(30));
        unreachable!()
    }
    match gather::nvml_within(&host, None, Duration::from_secs(5)) {
        Nvml::Opened { gpus, .. } => {
            assert_eq!(gpus.iter().map(|g| g.minor).collect::<Vec<_>>(), [3, 1]);
            assert_eq!(gpus[0].counter, Ok(Some(30)));
        }
        other => panic!("{other:?}"),
    }
    let t = std::time::Instant::now();
    let r = gather::nvml_within(&hangs, None, Duration::from_millis(200));
    assert!(
        matches!(r, Nvml::TimedOut(ref d) if d.contains("initialising")),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}
