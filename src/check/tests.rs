//! Each item's diagnosis on a healthy node, then broken one way at a time: the finding
//! turns to an error or warning and says what to change.

use std::path::{Path, PathBuf};

use super::conf::{Kind, PlugLine, Plugstack, SlurmConf};
use super::mapping::{self, JobKind, NodeMap};
use super::*;
use crate::gpu::fake::{nvidia_stat as stat, CAPS, NVIDIA};
use crate::gpu::map::{NodeGres, ProcFiles};
use crate::gpu::{BoardInfo, MigInstance};
use crate::slurm::gres::{NodeConf, SharedRecord};

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

/// A /proc with the given files (a directory of its own per test).
fn proc_with(tag: &str, files: &[(String, String)]) -> ProcFiles {
    let root = std::env::temp_dir().join(format!("sc-check-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    ProcFiles { root }
}

/// No /proc files at all.
fn no_proc() -> ProcFiles {
    ProcFiles {
        root: PathBuf::from("/nonexistent/sc-check-proc"),
    }
}

/// The jobs the check simulates on a node with these gres devices.
fn node_map(
    files: &[&[&str]],
    conf: NodeConf,
    types: Option<Vec<(Option<String>, usize)>>,
    proc: &ProcFiles,
) -> NodeMap {
    let node = NodeGres {
        files: files
            .iter()
            .map(|f| f.iter().map(PathBuf::from).collect())
            .collect(),
        conf,
        types,
        proc,
        stat: &stat,
    };
    mapping::simulate(&node, vec![], None)
}

/// NVML's board at position `index`.
fn board(index: u32, minor: u32) -> BoardInfo {
    let g = gpu(minor, None);
    BoardInfo {
        index,
        minor,
        uuid: g.uuid,
        name: g.name,
        ..BoardInfo::default()
    }
}

fn opened(gpus: Vec<NvmlGpu>) -> Nvml {
    let boards = gpus
        .iter()
        .enumerate()
        .map(|(i, g)| board(i as u32, g.minor))
        .collect();
    Nvml::Opened {
        driver: "550.54.15".into(),
        gpus,
        boards: Ok(boards),
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
            &[
                ("ClusterName", "c"),
                ("PrologFlags", "Alloc,Contain"),
                ("AccountingStorageTRES", "gres/gpu"),
            ],
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
            map: Ok(node_map(
                &[&["/dev/nvidia0"], &["/dev/nvidia1"]],
                NodeConf::default(),
                None,
                &no_proc(),
            )),
            nvml: opened(vec![gpu(1, Some(7)), gpu(0, Some(5))]),
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
    let tres = ("AccountingStorageTRES", "gres/gpu");
    f.slurm_conf = Ok(SlurmConf::from_pairs(
        conf,
        &[("PrologFlags", "Serial"), tres],
    ));
    let e = only_problem(&f, "PrologFlags", Status::Error);
    assert!(e.detail.contains("first step"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("add Alloc"));
    f.slurm_conf = Ok(SlurmConf::from_pairs(conf, &[tres]));
    let e = only_problem(&f, "PrologFlags", Status::Error);
    assert!(e.detail.contains("(not set)"), "{}", e.detail);
    f.slurm_conf = Ok(SlurmConf::from_pairs(
        conf,
        &[("prologflags", "alloc,runinjob"), tres],
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
    assert!(e.detail.contains("has 2 GPU(s)"), "{}", e.detail);
    assert!(e.fix.unwrap().contains("nvml_lib"));
    // The selection is still shown, unresolved.
    let d = diagnose(&f);
    assert!(find(&d, "gpu").detail.contains("not resolved"));
    // No GPU in gres.conf and none in NVML: nothing to do; NVML missing there is a warning.
    f.gpus.map = Err("/etc/slurm/gres.conf: No such file".into());
    only_problem(&f, "gpus", Status::Warning);
    // NVML sees GPUs that gres.conf does not give: an error (jobs are not measured).
    let mut f = facts();
    f.gpus.map = Err("/etc/slurm/gres.conf: No such file".into());
    only_problem(&f, "gpus", Status::Error);
    f.gpus.map = Ok(node_map(&[], NodeConf::default(), None, &no_proc()));
    only_problem(&f, "gpus", Status::Warning);
    // A node without GPUs: fine with NVML there, a warning without.
    f.gpus.nvml = opened(vec![]);
    assert!(diagnose(&f).iter().all(|x| x.status == Status::Ok));
    f.gpus.nvml = Nvml::Failed("no libnvidia-ml".into());
    let w = only_problem(&f, "gpus", Status::Warning);
    assert!(w.detail.contains("no libnvidia-ml"));
    // A minor NVML does not know: the sampler's own refusal, with its reason.
    let mut f = facts();
    f.gpus.map = Ok(node_map(
        &[&["/dev/nvidia0"], &["/dev/nvidia7"]],
        NodeConf::default(),
        None,
        &no_proc(),
    ));
    let e = only_problem(&f, "gpu", Status::Error);
    assert!(
        e.detail.contains("gres index 1")
            && e.detail.contains("device minor 7")
            && e.detail.contains("not measured"),
        "{}",
        e.detail
    );
    assert!(e.fix.unwrap().contains("/dev/nvidiaN"));
    assert_eq!(e.gpu.unwrap().key.as_deref(), Some("m7"));
    // A file that is not a device: the prolog's refusal.
    f.gpus.map = Ok(node_map(
        &[&["/etc/passwd"], &["/dev/nvidia1"]],
        NodeConf::default(),
        None,
        &no_proc(),
    ));
    let e = only_problem(&f, "gpu", Status::Error);
    assert!(e.detail.contains("not a character device"), "{}", e.detail);
    assert!(e.gpu.unwrap().refused.is_some());
    // No energy counter: measured by sampling, a warning.
    let mut f = facts();
    f.gpus.nvml = opened(vec![gpu(0, None), gpu(1, Some(1))]);
    let w = only_problem(&f, "gpu", Status::Warning);
    assert!(w.detail.contains("no energy counter"));
    f.gpus.nvml = Nvml::TimedOut("listing the GPUs".into());
    only_problem(&f, "gpus", Status::Error);
    // NVML opens but cannot describe its boards: the sampler could not resolve.
    let mut f = facts();
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, Some(1)), gpu(1, Some(1))],
        boards: Err("MIG mode: unknown error".into()),
    };
    let e = only_problem(&f, "gpus", Status::Error);
    assert!(e.detail.contains("MIG mode: unknown error"));
}

/// The gpu findings of a diagnosis, in order.
fn gpu_lines(f: &Facts) -> Vec<Finding> {
    diagnose(f)
        .into_iter()
        .filter(|x| x.check == "gpu")
        .collect()
}

#[test]
fn file_lists_map_each_index_to_its_minor_and_board() {
    // Files in an odd order: gres index 0 is minor 1, which NVML lists second.
    let mut f = facts();
    f.gpus.map = Ok(node_map(
        &[&["/dev/nvidia1"], &["/dev/nvidia0"]],
        NodeConf::default(),
        None,
        &no_proc(),
    ));
    let lines = gpu_lines(&f);
    assert_eq!(lines.len(), 2);
    for (index, minor) in [(0, 1u32), (1, 0)] {
        let l = &lines[index];
        assert_eq!(l.status, Status::Ok, "{l:#?}");
        let g = l.gpu.as_ref().unwrap();
        assert_eq!((g.index, g.job), (Some(index), "gpu"));
        assert_eq!(g.key, Some(format!("m{minor}")));
        assert_eq!(g.boards.len(), 1);
        let b = &g.boards[0];
        assert_eq!((b.minor, b.uuid.clone()), (minor, gpu(minor, None).uuid));
        assert_eq!((b.rule, b.share), ("whole", 1.0));
        // As tests/cluster/check.rs reads it on the cluster.
        assert!(
            l.detail.starts_with(&format!(
                "gres index {index}: /dev/nvidia{minor} minor {minor} "
            )) && l.detail.contains(&format!("device minor {minor}"))
                && l.detail.contains(&b.uuid),
            "{}",
            l.detail
        );
    }
    assert!(find(&diagnose(&f), "gpus")
        .detail
        .contains("File= lists: 2"));
}

/// /proc/driver/nvidia/gpus with one GPU per (bus, minor).
fn nvidia_gpus(gpus: &[(&str, u32)]) -> Vec<(String, String)> {
    gpus.iter()
        .map(|(bus, minor)| {
            (
                format!("driver/nvidia/gpus/{bus}/information"),
                format!(
                    "Model: \t NVIDIA H100\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n"
                ),
            )
        })
        .collect()
}

#[test]
fn autodetect_nvidia_numbers_by_minor_and_nvml_by_nvml_order() {
    // NVML lists minor 3 first; /proc has minors 1 and 3.
    let proc = proc_with(
        "autodetect",
        &nvidia_gpus(&[("0000:41:00.0", 3), ("0000:81:00.0", 1)]),
    );
    let conf = |a: &str| NodeConf {
        autodetect: Some(a.into()),
        ..NodeConf::default()
    };
    let mut f = facts();
    f.gpus.nvml = opened(vec![gpu(3, Some(1)), gpu(1, Some(1))]);
    f.gpus.map = Ok(node_map(&[], conf("nvidia"), None, &proc));
    let summary = find(&diagnose(&f), "gpus").detail.clone();
    assert!(
        summary.contains("AutoDetect=nvidia") && summary.contains("minors 1,3"),
        "{summary}"
    );
    let by_minor: Vec<u32> = gpu_lines(&f)
        .iter()
        .map(|l| l.gpu.as_ref().unwrap().boards[0].minor)
        .collect();
    assert_eq!(by_minor, [1, 3]);
    // The same node under AutoDetect=nvml: the i-th board in NVML's order.
    f.gpus.map = Ok(node_map(&[], conf("nvml"), None, &proc));
    let lines = gpu_lines(&f);
    let by_nvml: Vec<(Option<String>, u32)> = lines
        .iter()
        .map(|l| {
            let g = l.gpu.as_ref().unwrap();
            (g.key.clone(), g.boards[0].minor)
        })
        .collect();
    assert_eq!(
        by_nvml,
        [(Some("n0/2".into()), 3), (Some("n1/2".into()), 1)]
    );
    assert!(lines[0].detail.contains("NVML position 0 of 2"));
    // AutoDetect=full refuses where the two orders disagree, and says why.
    f.gpus.map = Ok(node_map(&[], conf("full"), None, &proc));
    let lines = gpu_lines(&f);
    assert!(
        lines.iter().all(|l| l.status == Status::Error),
        "{lines:#?}"
    );
    assert!(lines[0].detail.contains("AutoDetect=full"));
    // slurm.conf's count unlike the detected one: the prolog's refusal, and its fix.
    f.gpus.map = Ok(node_map(&[], conf("nvidia"), Some(vec![(None, 3)]), &proc));
    let lines = gpu_lines(&f);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].detail.contains("finds 2"), "{}", lines[0].detail);
    assert!(lines[0].fix.as_deref().unwrap().contains("slurmd -G"));
    // /proc unreadable: the configured count of indices, each refused.
    f.gpus.map = Ok(node_map(
        &[],
        conf("nvidia"),
        Some(vec![(None, 3)]),
        &no_proc(),
    ));
    let lines = gpu_lines(&f);
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l.status == Status::Error && l.detail.contains("cannot be read")));
    let _ = std::fs::remove_dir_all(&proc.root);
}

#[test]
fn mig_multiple_files_map_to_instances_charged_by_sms() {
    let proc = proc_with(
        "mig",
        &[
            (
                "devices".into(),
                format!("Character devices:\n{NVIDIA} nvidia-frontend\n{CAPS} nvidia-caps\n"),
            ),
            (
                "driver/nvidia-caps/mig-minors".into(),
                "config 1\nmonitor 2\ngpu0/gi1/access 21\ngpu0/gi1/ci0/access 22\ngpu0/gi2/access 30\ngpu0/gi2/ci0/access 31\n".into(),
            ),
        ],
    );
    let map = node_map(
        &[
            &[
                "/dev/nvidia0",
                "/dev/nvidia-caps/nvidia-cap21",
                "/dev/nvidia-caps/nvidia-cap22",
            ],
            &[
                "/dev/nvidia0",
                "/dev/nvidia-caps/nvidia-cap30",
                "/dev/nvidia-caps/nvidia-cap31",
            ],
            &["/dev/nvidia1"],
        ],
        NodeConf::default(),
        None,
        &proc,
    );
    let inst = |gi, sm_count| MigInstance {
        gi,
        ci: 0,
        sm_count,
        uuid: format!("MIG-{gi}"),
    };
    let total = 98;
    let mig = BoardInfo {
        mig: true,
        mig_sm_count: Some(total),
        instances: vec![inst(1, 28), inst(2, 14)],
        ..board(0, 0)
    };
    let mut f = facts();
    f.gpus.map = Ok(map);
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, Some(1)), gpu(1, Some(1))],
        boards: Ok(vec![mig.clone(), board(1, 1)]),
    };
    let d = diagnose(&f);
    assert!(
        find(&d, "gpus").detail.contains("nvidia-caps files (MIG"),
        "{d:#?}"
    );
    let lines = gpu_lines(&f);
    assert_eq!(lines.len(), 3);
    let used: u32 = mig.instances.iter().map(|i| i.sm_count).sum();
    for (l, i) in lines.iter().zip(&mig.instances) {
        assert_eq!(l.status, Status::Ok, "{l:#?}");
        let g = l.gpu.as_ref().unwrap();
        assert_eq!(g.key, Some(format!("g0.{}.0", i.gi)));
        let b = &g.boards[0];
        assert_eq!(b.rule, "mig-sm");
        assert_eq!(b.mig_instances, std::slice::from_ref(i));
        assert!((b.share - f64::from(i.sm_count) / f64::from(total)).abs() < 1e-9);
        let free = f64::from(total - used) / f64::from(total);
        assert!((b.unallocated.unwrap() - free).abs() < 1e-9);
        assert!(
            l.detail.contains(&format!("MIG minor 0 gi {} ci 0", i.gi))
                && l.detail.contains(&i.uuid)
                && l.detail.contains("never charged"),
            "{}",
            l.detail
        );
    }
    assert_eq!(lines[2].gpu.as_ref().unwrap().boards[0].rule, "whole");
    assert!(
        lines[0]
            .detail
            .contains("/dev/nvidia-caps/nvidia-cap21 nvidia-caps minor 21"),
        "{}",
        lines[0].detail
    );
    // An instance gres.conf names but NVML does not have: refused, with the fix.
    let mut gone = mig.clone();
    gone.instances.pop();
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, Some(1)), gpu(1, Some(1))],
        boards: Ok(vec![gone, board(1, 1)]),
    };
    let e = only_problem(&f, "gpu", Status::Error);
    assert!(e.detail.contains("gres index 1") && e.detail.contains("gi 2"));
    assert!(e.fix.unwrap().contains("nvidia-smi mig"));
    let _ = std::fs::remove_dir_all(&proc.root);
}

fn shared(name: &str, count: u64) -> NodeConf {
    NodeConf {
        shared: vec![SharedRecord {
            name: name.into(),
            count: Some(count),
            files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
        }],
        ..NodeConf::default()
    }
}

/// One MPS unit of a board of 3 and of 1000: charged exactly 1/count, not Slurm's
/// rounded percentage (33%, 1%).
#[test]
fn mps_jobs_are_charged_their_count_of_the_board() {
    for per_board in [3u64, 1000] {
        mps_job_of_one_unit(per_board);
    }
}

fn mps_job_of_one_unit(per_board: u64) {
    let mut f = facts();
    f.gpus.map = Ok(node_map(
        &[&["/dev/nvidia0"], &["/dev/nvidia1"]],
        shared("mps", 2 * per_board),
        None,
        &no_proc(),
    ));
    assert!(diagnose(&f).iter().all(|x| x.status == Status::Ok));
    let summary = find(&diagnose(&f), "gpus").detail.clone();
    assert!(
        summary.contains(&format!("gres/mps: {per_board} on minor 0")),
        "{summary}"
    );
    let lines = gpu_lines(&f);
    // Per index: a whole-GPU job and an MPS job of one unit.
    assert_eq!(lines.len(), 4);
    let whole = lines[0].gpu.as_ref().unwrap();
    assert_eq!((whole.job, whole.boards[0].rule), ("gpu", "whole"));
    let mps = lines[1].gpu.as_ref().unwrap();
    assert_eq!((mps.job, mps.job_share), ("mps", Some(1)));
    assert_eq!(mps.key, Some(format!("m0~mps1/{per_board}")));
    let b = &mps.boards[0];
    assert_eq!((b.rule, b.board_mps), ("mps", Some(per_board)));
    assert!(
        (b.share - 1.0 / per_board as f64).abs() < 1e-12,
        "{}",
        b.share
    );
    assert!(
        lines[1]
            .detail
            .contains(&format!("mps {:.1}%", 100.0 / per_board as f64)),
        "{}",
        lines[1].detail
    );
    assert!(lines[1]
        .detail
        .contains(&format!("the board has {per_board} MPS")));
}

#[test]
fn shards_are_refused_with_the_reason_and_shown_where_known() {
    let mut f = facts();
    f.gpus.map = Ok(node_map(
        &[&["/dev/nvidia0"], &["/dev/nvidia1"]],
        shared("shard", 16),
        None,
        &no_proc(),
    ));
    let lines = gpu_lines(&f);
    assert_eq!(lines.len(), 4);
    let gpu_job = &lines[0];
    assert_eq!(gpu_job.status, Status::Warning, "{gpu_job:#?}");
    assert!(
        gpu_job.detail.contains("no shard count"),
        "{}",
        gpu_job.detail
    );
    assert!(gpu_job.gpu.as_ref().unwrap().refused.is_some());
    let shard = lines[1].gpu.as_ref().unwrap();
    assert_eq!(shard.job, "shard");
    assert_eq!(shard.key.as_deref(), Some("m0~sh1/8"));
    assert_eq!(shard.boards[0].rule, "shard");
    assert_eq!(shard.boards[0].board_shards, Some(8));
    // Warnings only: nothing in the configuration to correct.
    assert!(!failed(&diagnose(&f)));
}

#[test]
fn several_gpu_types_are_refused_with_the_fix() {
    let mut f = facts();
    f.gpus.map = Ok(node_map(
        &[&["/dev/nvidia0"], &["/dev/nvidia1"]],
        NodeConf::default(),
        Some(vec![(Some("a100".into()), 1), (Some("h100".into()), 1)]),
        &no_proc(),
    ));
    let d = diagnose(&f);
    assert!(find(&d, "gpus").detail.contains("several GPU types"));
    let lines = gpu_lines(&f);
    assert!(lines
        .iter()
        .all(|l| l.status == Status::Error && l.fix.as_deref().unwrap().contains("env_uuid")));
    assert!(failed(&d));
}

#[test]
fn autodetect_jobs_given_uuids_resolve_by_them() {
    let proc = proc_with(
        "uuids",
        &nvidia_gpus(&[("0000:41:00.0", 0), ("0000:81:00.0", 1)]),
    );
    let inst = |gi, sm_count| MigInstance {
        gi,
        ci: 0,
        sm_count,
        uuid: format!("MIG-{gi}"),
    };
    let mig = BoardInfo {
        mig: true,
        mig_sm_count: Some(98),
        instances: vec![inst(1, 28), inst(2, 14)],
        ..board(0, 0)
    };
    let boards = vec![mig.clone(), board(1, 1)];
    let conf = |a: &str| NodeConf {
        autodetect: Some(a.into()),
        ..NodeConf::default()
    };
    let simulate = |a: &str, settings: Vec<String>, types| {
        let node = NodeGres {
            files: vec![],
            conf: conf(a),
            types,
            proc: &proc,
            stat: &stat,
        };
        mapping::simulate(&node, settings, Some(&boards))
    };
    let mut f = facts();
    f.gpus.nvml = Nvml::Opened {
        driver: "x".into(),
        gpus: vec![gpu(0, Some(1)), gpu(1, Some(1))],
        boards: Ok(boards.clone()),
    };
    // AutoDetect=nvml with a MIG board: jobs by index are refused (slurmd numbers the
    // instances too), jobs on an instance come with its MIG UUID and are measured.
    f.gpus.map = Ok(simulate("nvml", vec![], None));
    let lines = gpu_lines(&f);
    let (by_index, by_uuid): (Vec<_>, Vec<_>) = lines
        .iter()
        .partition(|l| l.gpu.as_ref().unwrap().index.is_some());
    assert_eq!(by_index.len(), 2);
    assert!(by_index.iter().all(|l| l.status == Status::Error
        && l.detail.contains("MIG")
        && l.fix.as_deref().unwrap().contains("MultipleFiles")));
    assert_eq!(by_uuid.len(), mig.instances.len());
    for (l, i) in by_uuid.iter().zip(&mig.instances) {
        assert_eq!(l.status, Status::Ok, "{l:#?}");
        let g = l.gpu.as_ref().unwrap();
        assert_eq!(g.key, Some(format!("u:{}", i.uuid)));
        assert_eq!(g.boards[0].rule, "mig-sm");
        assert_eq!(g.boards[0].mig_instances, std::slice::from_ref(i));
    }
    // AutoDetect=nvidia gives no MIG UUIDs, and board UUIDs only with Flags=env_uuid.
    // With env_uuid under AutoDetect=nvidia the MIG board comes whole, by its UUID.
    f.gpus.map = Ok(simulate("nvidia", vec!["Flags=env_uuid".into()], None));
    let whole_mig = gpu_lines(&f)
        .into_iter()
        .find(|l| l.gpu.as_ref().unwrap().key == Some(format!("u:{}", mig.uuid)))
        .unwrap();
    assert!(
        whole_mig.detail.contains("MIG board given whole"),
        "{}",
        whole_mig.detail
    );
    assert!(simulate("nvidia", vec![], None)
        .jobs
        .iter()
        .all(|j| j.index.is_some()));
    // Flags=env_uuid on a node of two GPU types: by index the prolog would refuse (a
    // warning: Slurm gives UUIDs), by UUID each job is its board.
    let mut f2 = facts();
    f2.gpus.map = Ok(simulate(
        "nvidia",
        vec!["Flags=env_uuid".into()],
        Some(vec![(Some("a".into()), 1), (Some("b".into()), 1)]),
    ));
    let d = diagnose(&f2);
    assert!(!failed(&d), "{d:#?}");
    let lines = gpu_lines(&f2);
    let uuid_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.gpu.as_ref().unwrap().index.is_none())
        .collect();
    assert_eq!(uuid_lines.len(), 2);
    for (l, minor) in uuid_lines.iter().zip([0, 1]) {
        let b = &l.gpu.as_ref().unwrap().boards[0];
        assert_eq!((b.minor, b.rule), (minor, "whole"));
        assert_eq!(
            l.gpu.as_ref().unwrap().key,
            Some(format!("u:{}", gpu(minor, None).uuid))
        );
    }
    assert!(lines
        .iter()
        .filter(|l| l.gpu.as_ref().unwrap().index.is_some())
        .all(|l| l.status == Status::Warning && l.detail.contains("several GPU types")));
    let _ = std::fs::remove_dir_all(&proc.root);
}

#[test]
fn uuid_settings_are_read_from_gres_conf() {
    assert_eq!(
        mapping::uuid_settings(
            "AutoDetect=nvml\nName=gpu Flags=nvidia_gpu_env,env_uuid # c\n# Flags=env_uuid\nName=gpu UniqueId=GPU-1 File=/dev/nvidia0\n"
        ),
        ["Flags=nvidia_gpu_env,env_uuid", "UniqueId=GPU-1"]
    );
    assert!(mapping::uuid_settings("Name=gpu Flags=nvidia_gpu_env\n").is_empty());
    let mut m = node_map(&[&["/dev/nvidia0"]], NodeConf::default(), None, &no_proc());
    m.uuid_settings = vec!["Flags=env_uuid".into()];
    assert!(mapping::config_kind(&m).contains("CUDA_VISIBLE_DEVICES"));
    assert_eq!(m.jobs[0].kind, JobKind::Gpu);
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

/// AccountingStorageTRES without gres/gpu (Slurm's default): a warning that says what it
/// costs (report's GPU-hours, the mail's GPU count) and the line to set.
#[test]
fn accounting_storage_tres_without_gres_gpu_is_a_warning() {
    let conf = Path::new("/etc/slurm/slurm.conf");
    let with = |pairs: &[(&str, &str)]| {
        let mut f = facts();
        let mut all = vec![("PrologFlags", "Alloc")];
        all.extend_from_slice(pairs);
        f.slurm_conf = Ok(SlurmConf::from_pairs(conf, &all));
        f
    };
    // Not set: Slurm's defaults (billing, cpu, energy, mem, node, ...) hold no GRES.
    let w = only_problem(&with(&[]), "accounting TRES", Status::Warning);
    assert!(
        w.detail.contains("(not set) lacks gres/gpu"),
        "{}",
        w.detail
    );
    assert!(
        w.detail.contains("GPU-hours") && w.detail.contains("mail"),
        "{}",
        w.detail
    );
    let fix = w.fix.unwrap();
    assert!(
        fix.contains("AccountingStorageTRES=gres/gpu ") && fix.contains("restart slurmctld"),
        "{fix}"
    );
    // Other GRES listed: kept in the fix; gpumem is not gpu.
    let w = only_problem(
        &with(&[("AccountingStorageTRES", "gres/gpumem,License/iop1")]),
        "accounting TRES",
        Status::Warning,
    );
    assert!(
        w.fix
            .unwrap()
            .contains("AccountingStorageTRES=gres/gpumem,License/iop1,gres/gpu "),
        "{}",
        w.detail
    );
    // Shards configured but not tracked: named too.
    let w = only_problem(
        &with(&[
            ("AccountingStorageTRES", "gres/gpu"),
            ("GresTypes", "gpu,shard"),
        ]),
        "accounting TRES",
        Status::Warning,
    );
    assert!(w.detail.contains("lacks gres/shard"), "{}", w.detail);
    // Listed, in any case, plain or by type only (every GPU job is then accounted under
    // one of the types): fine.
    for v in [
        "gres/gpu",
        "cpu, GRES/GPU ,license/x",
        "gres/gpu:a100,gres/gpu:h100",
    ] {
        let f = with(&[("AccountingStorageTRES", v), ("GresTypes", "gpu")]);
        assert_eq!(
            find(&diagnose(&f), "accounting TRES").status,
            Status::Ok,
            "{v}"
        );
    }
    let f = with(&[
        ("AccountingStorageTRES", "gres/gpu,gres/shard,gres/mps"),
        ("GresTypes", "gpu,shard,mps"),
    ]);
    assert!(diagnose(&f).iter().all(|x| x.status == Status::Ok));
    // slurm.conf unreadable: not checked, a warning.
    let mut f = facts();
    f.slurm_conf = Err("permission denied".into());
    assert_eq!(
        find(&diagnose(&f), "accounting TRES").status,
        Status::Warning
    );
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
        &[
            ("PrologFlags", "RunInJob"),
            ("AccountingStorageTRES", "gres/gpu"),
        ],
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
    // The gpu lines carry the mapping; the others have no gpu field.
    let gpu = items.iter().find(|i| i["check"] == "gpu").unwrap();
    assert_eq!(gpu["gpu"]["key"], "m0");
    assert_eq!(gpu["gpu"]["boards"][0]["rule"], "whole");
    assert_eq!(gpu["gpu"]["boards"][0]["minor"], 0);
    assert!(bad.get("gpu").is_none());
}

#[test]
fn nvml_is_bounded_and_read_by_minor() {
    use crate::gpu::fake::{FakeGpu, FakeHost};
    use crate::gpu::{GpuError, GpuHost};
    use std::time::Duration;
    fn host(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        let g = |minor| FakeGpu::new(minor, 1.0, Some(u64::from(minor) * 10));
        Ok(Box::new(FakeHost(vec![g(3), g(1)])))
    }
    fn hangs(_: Option<&Path>) -> Result<Box<dyn GpuHost>, GpuError> {
        std::thread::sleep(Duration::from_secs(30));
        unreachable!()
    }
    match gather::nvml_within(&host, None, Duration::from_secs(5)) {
        Nvml::Opened { gpus, boards, .. } => {
            assert_eq!(gpus.iter().map(|g| g.minor).collect::<Vec<_>>(), [3, 1]);
            let boards = boards.unwrap();
            assert_eq!(
                boards
                    .iter()
                    .map(|b| (b.index, b.minor))
                    .collect::<Vec<_>>(),
                [(0, 3), (1, 1)]
            );
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

/// The prolog and `check` read the node's GPUs through the one `gpu_map::read_node`: what
/// the prolog selects for a job is what `check` shows for each of the job's gres indices.
#[test]
fn the_prolog_selects_what_check_shows() {
    use crate::gpu::map::{self as gpu_map, Key, Selection};
    use crate::node::job_env::{env_of, JobEnv};
    let dir = std::env::temp_dir().join(format!("sc-check-prolog-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let slurm_conf = dir.join("slurm.conf");
    std::fs::write(&slurm_conf, "NodeName=n1 Gres=gpu:3 CPUs=4\n").unwrap();
    // Beside slurm.conf, where both look for it when `gres_conf` is not set.
    std::fs::write(
        dir.join("gres.conf"),
        "NodeName=n1 Name=gpu MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/nvidia-cap21,/dev/nvidia-caps/nvidia-cap22\n\
         NodeName=n1 Name=gpu MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/nvidia-cap30,/dev/nvidia-caps/nvidia-cap31\n\
         NodeName=n1 Name=gpu File=/dev/nvidia3\n",
    )
    .unwrap();
    let proc = proc_with(
        "prolog",
        &[
            (
                "devices".into(),
                format!("Character devices:\n{NVIDIA} nvidia-frontend\n{CAPS} nvidia-caps\n"),
            ),
            (
                "driver/nvidia-caps/mig-minors".into(),
                "gpu0/gi1/access 21\ngpu0/gi1/ci0/access 22\ngpu0/gi2/access 30\ngpu0/gi2/ci0/access 31\n".into(),
            ),
        ],
    );
    let config = Config::default();
    let vars = [
        ("SLURM_JOB_ID", "7"),
        ("SLURMD_NODENAME", "n1"),
        ("SLURM_JOB_GPUS", "0,2"),
        ("SLURM_CONF", slurm_conf.to_str().unwrap()),
    ];
    let env = JobEnv::from_env(None, env_of(&vars)).unwrap();
    let indices = crate::slurm::gres::parse_indices(env.gpus.as_deref().unwrap()).unwrap();
    let prolog =
        crate::node::selection::job_selection(&config, &env, &indices, &proc, &stat).unwrap();
    let gres_conf = gpu_map::gres_conf_path(config.gres_conf.as_deref(), &slurm_conf);
    let map =
        super::gather::gather_map(&gres_conf, &slurm_conf, Some("n1"), &proc, &stat, None).unwrap();
    let shown: Vec<_> = indices
        .iter()
        .flat_map(|&i| {
            let job = map
                .jobs
                .iter()
                .find(|j| j.index == Some(i) && j.kind == JobKind::Gpu)
                .unwrap();
            job.selection.clone().unwrap()
        })
        .collect();
    assert_eq!(prolog, Ok(Selection::Known(shown.clone())));
    let keys: Vec<Key> = shown.into_iter().map(|s| s.key).collect();
    assert_eq!(
        keys,
        [
            Key::Mig {
                minor: 0,
                gi: 1,
                ci: Some(0)
            },
            Key::Minor(3)
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&proc.root);
}
