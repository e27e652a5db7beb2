use super::*;
use crate::gpu::fake::{nvidia_stat, CAPS, NVIDIA};
use crate::gpu::MigInstance;
use crate::slurm::gres::{self, NodeConf, SharedRecord};
use std::collections::HashMap;
use std::fs;

/// A temporary /proc with the given files.
fn proc_with(tag: &str, files: &[(&str, &str)]) -> ProcFiles {
    let root = std::env::temp_dir().join(format!("sc-gpumap-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for (rel, text) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fs::create_dir_all(&root).unwrap();
    ProcFiles { root }
}

fn devices() -> (&'static str, String) {
    (
        "devices",
        format!("Character devices:\n  1 mem\n{NVIDIA} nvidia-frontend\n{CAPS} nvidia-caps\n\nBlock devices:\n  8 sd\n{CAPS} notcaps\n"),
    )
}

/// /proc/driver/nvidia/gpus/<bus>/information for each (bus, minor).
fn nvidia_gpus(gpus: &[(&str, u32)]) -> Vec<(String, String)> {
    gpus.iter()
        .map(|(bus, minor)| {
            (
                format!("driver/nvidia/gpus/{bus}/information"),
                format!("Model: \t\t NVIDIA A100\nIRQ: 1\nGPU UUID: \t GPU-x{minor}\nBus Location: \t {bus}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"),
            )
        })
        .collect()
}

/// A stat over a table: anything listed explicitly, else [`nvidia_stat`].
fn stat_table(extra: &[(&str, (u32, u32))]) -> impl Fn(&Path) -> Option<(u32, u32)> {
    let extra: HashMap<String, (u32, u32)> =
        extra.iter().map(|(p, d)| (p.to_string(), *d)).collect();
    move |p: &Path| match p.to_str().and_then(|s| extra.get(s)) {
        Some(d) => Some(*d),
        None => nvidia_stat(p),
    }
}

fn files(list: &[&[&str]]) -> Vec<Vec<PathBuf>> {
    list.iter()
        .map(|f| f.iter().map(PathBuf::from).collect())
        .collect()
}

fn job(indices: &[usize]) -> JobGpus {
    JobGpus {
        indices: indices.to_vec(),
        ..JobGpus::default()
    }
}

fn whole(keys: &[Key]) -> Vec<Sel> {
    keys.iter()
        .map(|k| Sel {
            key: k.clone(),
            share: Share::Whole,
        })
        .collect()
}

fn board(index: u32, minor: u32) -> BoardInfo {
    BoardInfo {
        index,
        minor,
        uuid: format!("GPU-{minor:04}-board"),
        pci_bus_id: format!("00000000:{:02x}:00.0", 0x10 + index),
        name: "Fake".into(),
        ..BoardInfo::default()
    }
}

fn mig_board(index: u32, minor: u32, sms: Option<u32>, inst: &[(u32, u32, u32)]) -> BoardInfo {
    BoardInfo {
        mig: true,
        sm_count: sms,
        instances: inst
            .iter()
            .map(|&(gi, ci, sm)| MigInstance {
                gi,
                ci,
                sm_count: sm,
                uuid: format!("MIG-{minor}-{gi}-{ci}"),
            })
            .collect(),
        ..board(index, minor)
    }
}

#[test]
fn file_lists_in_odd_orders_map_through_minors() {
    // gres.conf and slurm.conf parsed by gres; indices -> files -> minors.
    let d = std::env::temp_dir().join(format!("sc-gpumap-oddconf-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let g = d.join("gres.conf");
    fs::write(
        &g,
        "NodeName=n1 Name=gpu Type=aa File=/dev/nvidia[5-6]\nName=gpu Type=zz File=/dev/nvidia12,/dev/nvidia3\nNodeName=n1 Name=gpu Type=aa File=/dev/nvidia2\n",
    )
    .unwrap();
    let s = d.join("slurm.conf");
    fs::write(&s, "NodeName=n1 Gres=gpu:zz:2,gpu:aa:3 CPUs=4\n").unwrap();
    let proc = proc_with("odd", &[]);
    let stat = stat_table(&[]);
    let f = gres::gpu_files(&g, Some(&s), "n1").unwrap();
    let types = gres::node_gpu_types(&fs::read_to_string(&s).unwrap(), "n1");
    let node = NodeGres {
        files: f,
        conf: gres::node_conf(&g, "n1").unwrap(),
        types: None,
        proc: &proc,
        stat: &stat,
    };
    assert_eq!(
        select(&job(&[0, 1, 4]), &node).unwrap(),
        whole(&[Key::Minor(12), Key::Minor(3), Key::Minor(2)])
    );
    // With the two types of slurm.conf, only UUIDs are certain.
    let node = NodeGres { types, ..node };
    let r = select(&job(&[0]), &node).unwrap_err();
    assert!(r.0.contains("several GPU types"), "{r}");
    let mut j = job(&[2]);
    j.cuda_visible_devices = Some("GPU-aaaa-1".into());
    assert_eq!(
        select(&j, &node).unwrap(),
        whole(&[Key::Uuid("GPU-aaaa-1".into())])
    );
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_index_past_the_files_is_refused() {
    let proc = proc_with("past", &[]);
    let stat = stat_table(&[]);
    let node = NodeGres {
        files: files(&[&["/dev/nvidia1"]]),
        conf: NodeConf::default(),
        types: None,
        proc: &proc,
        stat: &stat,
    };
    assert!(select(&job(&[1]), &node).is_err());
    assert_eq!(select(&job(&[0]), &node).unwrap(), whole(&[Key::Minor(1)]));
}

#[test]
fn mig_records_use_the_board_minor_and_the_caps_instance() {
    let (dev, devtext) = devices();
    let proc = proc_with(
        "mig",
        &[
            (dev, &devtext),
            (
                "driver/nvidia-caps/mig-minors",
                "config 1\nmonitor 2\ngpu0/gi1/access 21\ngpu0/gi1/ci0/access 22\ngpu4/gi2/access 3\ngpu4/gi2/ci0/access 4\ngpu4/gi2/ci1/access 5\n",
            ),
        ],
    );
    let stat = stat_table(&[]);
    let node = NodeGres {
        files: files(&[
            &[
                "/dev/nvidia0",
                "/dev/nvidia-caps/nvidia-cap21",
                "/dev/nvidia-caps/nvidia-cap22",
            ],
            // Five or more GPUs: cap minor 3 must never be taken for /dev/nvidia3.
            &["/dev/nvidia4", "/dev/nvidia-caps/nvidia-cap3"],
            &[
                "/dev/nvidia-caps/nvidia-cap1",
                "/dev/nvidia2",
                "/dev/nvidia-caps/nvidia-cap4",
            ],
        ]),
        conf: NodeConf::default(),
        types: None,
        proc: &proc,
        stat: &stat,
    };
    assert_eq!(
        select(&job(&[0, 1]), &node).unwrap(),
        whole(&[
            Key::Mig {
                minor: 0,
                gi: 1,
                ci: Some(0)
            },
            Key::Mig {
                minor: 4,
                gi: 2,
                ci: None
            }
        ])
    );
    // Cap 4 belongs to GPU 4, not to /dev/nvidia2.
    let r = select(&job(&[2]), &node).unwrap_err();
    assert!(r.0.contains("GPU minor 4"), "{r}");
}

#[test]
fn caps_without_mig_minors_or_two_boards_are_refused() {
    let (dev, devtext) = devices();
    let proc = proc_with("nominors", &[(dev, &devtext)]);
    let stat = stat_table(&[("/dev/other", (NVIDIA + 1, 9))]);
    let node = NodeGres {
        files: files(&[
            &["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap21"],
            &["/dev/nvidia1", "/dev/other"],
            &["/dev/nvidia-caps/nvidia-cap7"],
            &["/dev/missing-file"],
        ]),
        conf: NodeConf::default(),
        types: None,
        proc: &proc,
        stat: &stat,
    };
    for (i, why) in [
        (0, "mig-minors"),
        (1, "several device files"),
        (2, "no GPU device file"),
        (3, "not a character device"),
    ] {
        let r = select(&job(&[i]), &node).unwrap_err();
        assert!(r.0.contains(why), "{i}: {r}");
    }
    // Without nvidia-caps in /proc/devices every device is a board: two minors.
    let bare = proc_with("nocaps", &[]);
    let node = NodeGres {
        proc: &bare,
        ..node
    };
    assert!(select(&job(&[0]), &node).is_err());
}

#[test]
fn autodetect_nvidia_orders_by_minor_whatever_the_bus_order() {
    let gpus = nvidia_gpus(&[
        ("0000:81:00.0", 1),
        ("0000:07:00.0", 3),
        ("0000:41:00.0", 0),
    ]);
    let files_: Vec<(&str, &str)> = gpus.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let proc = proc_with("nvidia", &files_);
    let stat = stat_table(&[]);
    let conf = NodeConf {
        autodetect: Some("nvidia".into()),
        ..NodeConf::default()
    };
    let node = NodeGres {
        files: Vec::new(),
        conf,
        types: Some(vec![(Some("a100".into()), 3)]),
        proc: &proc,
        stat: &stat,
    };
    assert_eq!(
        select(&job(&[0, 2]), &node).unwrap(),
        whole(&[Key::Minor(0), Key::Minor(3)])
    );
    assert!(select(&job(&[3]), &node).is_err());
    // slurm.conf says 4 GPUs, the driver shows 3: refused.
    let node = NodeGres {
        types: Some(vec![(None, 4)]),
        ..node
    };
    let r = select(&job(&[0]), &node).unwrap_err();
    assert!(r.0.contains("finds 3"), "{r}");
}

#[test]
fn autodetect_nvml_and_full_are_positions_the_sampler_resolves() {
    let gpus = nvidia_gpus(&[("0000:81:00.0", 1), ("0000:07:00.0", 0)]);
    let files_: Vec<(&str, &str)> = gpus.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let proc = proc_with("nvml", &files_);
    let stat = stat_table(&[]);
    for (mode, key) in [
        ("nvml", Key::Nvml { index: 1, of: 2 }),
        ("full", Key::Either { index: 1, of: 2 }),
    ] {
        let node = NodeGres {
            files: Vec::new(),
            conf: NodeConf {
                autodetect: Some(mode.into()),
                ..NodeConf::default()
            },
            types: None,
            proc: &proc,
            stat: &stat,
        };
        assert_eq!(select(&job(&[1]), &node).unwrap(), whole(&[key]));
    }
    // NVML order is PCI order, not minor order: index 1 is minor 0's board here.
    let boards = vec![board(0, 1), board(1, 0)];
    let c = resolve(&whole(&[Key::Nvml { index: 1, of: 2 }]), &boards).unwrap();
    assert_eq!(c[0].minor, 0);
    // Under full, NVML and nvidia disagree about index 1: refused; they agree on a
    // node whose PCI order is its minor order.
    assert!(resolve(&whole(&[Key::Either { index: 1, of: 2 }]), &boards).is_err());
    let agreeing = vec![board(0, 0), board(1, 1)];
    let c = resolve(&whole(&[Key::Either { index: 1, of: 2 }]), &agreeing).unwrap();
    assert_eq!(c[0].minor, 1);
    // NVML sees another count than the prolog did: refused.
    assert!(resolve(&whole(&[Key::Nvml { index: 0, of: 3 }]), &boards).is_err());
}

#[test]
fn unknown_autodetect_and_mixed_configurations_are_refused() {
    let proc = proc_with(
        "unknown",
        &nvidia_gpus(&[("0000:01:00.0", 0)])
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect::<Vec<_>>(),
    );
    let stat = stat_table(&[]);
    for (conf, why) in [
        (
            NodeConf {
                autodetect: Some("rsmi".into()),
                ..NodeConf::default()
            },
            "AutoDetect=rsmi",
        ),
        (
            NodeConf {
                autodetect: Some("nvml".into()),
                gpus_with_file: 1,
                ..NodeConf::default()
            },
            "File= records",
        ),
        (
            NodeConf {
                autodetect: Some("nvidia".into()),
                gpus_without_file: 2,
                ..NodeConf::default()
            },
            "Count=2",
        ),
    ] {
        let node = NodeGres {
            files: Vec::new(),
            conf,
            types: None,
            proc: &proc,
            stat: &stat,
        };
        let r = select(&job(&[0]), &node).unwrap_err();
        assert!(r.0.contains(why), "{r}");
    }
    let empty = proc_with("noproc", &[]);
    let node = NodeGres {
        files: Vec::new(),
        conf: NodeConf {
            autodetect: Some("nvidia".into()),
            ..NodeConf::default()
        },
        types: None,
        proc: &empty,
        stat: &stat,
    };
    assert!(select(&job(&[0]), &node).is_err());
}

#[test]
fn uuids_from_env_uuid_are_used_and_checked() {
    let proc = proc_with("uuid", &[]);
    let stat = stat_table(&[]);
    let node = NodeGres {
        files: files(&[&["/dev/nvidia0"], &["/dev/nvidia1"]]),
        conf: NodeConf::default(),
        types: None,
        proc: &proc,
        stat: &stat,
    };
    let mut j = job(&[0, 1]);
    j.cuda_visible_devices = Some("GPU-0001-board,MIG-0-1-0".into());
    let sel = select(&j, &node).unwrap();
    assert_eq!(
        sel,
        whole(&[
            Key::Uuid("GPU-0001-board".into()),
            Key::Uuid("MIG-0-1-0".into())
        ])
    );
    // Numeric CUDA_VISIBLE_DEVICES are gres indices: the files decide.
    j.cuda_visible_devices = Some("1,0".into());
    assert_eq!(
        select(&j, &node).unwrap(),
        whole(&[Key::Minor(0), Key::Minor(1)])
    );
    for bad in ["GPU-0001-board,1", "GPU-0001-board", "GPU-x y,MIG-1"] {
        j.cuda_visible_devices = Some(bad.into());
        assert!(select(&j, &node).is_err(), "{bad}");
    }
}

#[test]
fn mps_jobs_ask_slurmctld_and_whole_gpus_beside_mps_do_not() {
    let proc = proc_with("mps", &[]);
    let stat = stat_table(&[]);
    let node = NodeGres {
        files: files(&[&["/dev/nvidia0"], &["/dev/nvidia1"]]),
        conf: NodeConf {
            shared: vec![SharedRecord {
                name: "mps".into(),
                count: Some(200),
                files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
            }],
            ..NodeConf::default()
        },
        types: None,
        proc: &proc,
        stat: &stat,
    };
    let mut j = job(&[1]);
    j.mps_percentage = Some("25".into());
    let a = asked(choose(&j, &node).unwrap());
    assert_eq!(
        format_selection(&Selection::Ask(a.clone())),
        "ask:1:m0%100;m1%100"
    );
    let sel = sampler_side(&a, &json_job(3, "n", "mps:25(IDX:1)"), 3, "n").unwrap();
    assert_eq!(
        sel,
        vec![Sel {
            key: Key::Minor(1),
            share: Share::Mps { n: 25, of: 100 }
        }]
    );
    let c = resolve(&sel, &[board(0, 0), board(1, 1)]).unwrap();
    assert_eq!((c[0].minor, c[0].share, c[0].rule), (1, 0.25, "mps"));
    // No percentage: the job has the GPU itself, no question.
    assert_eq!(
        choose(&job(&[0]), &node).unwrap(),
        Selection::Known(whole(&[Key::Minor(0)]))
    );
    // Two indices: slurmctld's one entry must name both.
    let mut two = job(&[0, 1]);
    two.mps_percentage = Some("50".into());
    let a = asked(choose(&two, &node).unwrap());
    assert!(sampler_side(&a, &json_job(3, "n", "mps:50(IDX:1)"), 3, "n").is_err());
    // An older prolog's percentage is still read by the sampler (25/100).
    assert_eq!(
        parse_spec("m1~mps25").unwrap()[0].share,
        Share::Mps { n: 25, of: 100 }
    );
}

#[test]
fn shards_are_refused_without_a_count_and_shared_with_one() {
    let proc = proc_with("shard", &[]);
    let stat = stat_table(&[]);
    let node = NodeGres {
        files: files(&[&["/dev/nvidia0"], &["/dev/nvidia1"], &["/dev/nvidia2"]]),
        conf: NodeConf {
            shared: vec![SharedRecord {
                name: "shard".into(),
                count: Some(16),
                files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
            }],
            ..NodeConf::default()
        },
        types: None,
        proc: &proc,
        stat: &stat,
    };
    let r = select(&job(&[1]), &node).unwrap_err();
    assert!(r.0.contains("shard"), "{r}");
    // A board without shards is a whole GPU.
    assert_eq!(select(&job(&[2]), &node).unwrap(), whole(&[Key::Minor(2)]));
    let mut j = job(&[1]);
    j.shards_on_node = Some("2".into());
    let sel = select(&j, &node).unwrap();
    assert_eq!(sel[0].share, Share::Shard { n: 2, of: 8 });
    let c = resolve(&sel, &[board(0, 0), board(1, 1), board(2, 2)]).unwrap();
    assert_eq!((c[0].minor, c[0].share, c[0].rule), (1, 0.25, "shard"));
    j.shards_on_node = Some("9".into());
    assert!(select(&j, &node).is_err());
    // A count that does not divide over its files: each file Count / files, as slurmd
    // (gres_c_s.c _build_shared_list), the remainder lost.
    let uneven = NodeGres {
        conf: NodeConf {
            shared: vec![SharedRecord {
                name: "shard".into(),
                count: Some(5),
                files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
            }],
            ..NodeConf::default()
        },
        ..node
    };
    assert_eq!(
        board_counts(&uneven, "shard").unwrap(),
        [(0, 2), (1, 2)].into()
    );
    assert_eq!(
        select(&job(&[2]), &uneven).unwrap(),
        whole(&[Key::Minor(2)])
    );
}

#[test]
fn mig_instances_share_by_sms_and_refuse_without_them() {
    let b = mig_board(0, 0, Some(98), &[(1, 0, 14), (2, 0, 28), (2, 1, 14)]);
    let boards = vec![b.clone(), board(1, 1)];
    let c = resolve(
        &whole(&[Key::Mig {
            minor: 0,
            gi: 2,
            ci: None,
        }]),
        &boards,
    )
    .unwrap();
    assert_eq!(c[0].rule, "mig-sm");
    assert!((c[0].share - 42.0 / 98.0).abs() < 1e-12);
    // 98 - 56 SMs are in no instance: reported, not charged.
    assert!((c[0].unallocated.unwrap() - 42.0 / 98.0).abs() < 1e-12);
    // By MIG UUID, and two instances of one board add up.
    let c = resolve(
        &whole(&[
            Key::Uuid("MIG-0-1-0".into()),
            Key::Mig {
                minor: 0,
                gi: 2,
                ci: Some(1),
            },
        ]),
        &boards,
    )
    .unwrap();
    assert_eq!(c.len(), 1);
    assert!((c[0].share - 28.0 / 98.0).abs() < 1e-12);
    // No SM count, no such instance, MIG off: refused.
    let no_sm = vec![mig_board(0, 0, None, &[(1, 0, 14)])];
    assert!(resolve(&whole(&[Key::Uuid("MIG-0-1-0".into())]), &no_sm).is_err());
    assert!(resolve(
        &whole(&[Key::Mig {
            minor: 0,
            gi: 7,
            ci: None
        }]),
        &boards
    )
    .is_err());
    assert!(resolve(
        &whole(&[Key::Mig {
            minor: 1,
            gi: 1,
            ci: None
        }]),
        &boards
    )
    .is_err());
    // The whole MIG board by its own file: the whole board, as before.
    let c = resolve(&whole(&[Key::Minor(0)]), &boards).unwrap();
    assert_eq!((c[0].share, c[0].rule), (1.0, "whole"));
    // AutoDetect positions count MIG instances: with a MIG board on the node every
    // position is refused, the non-MIG board's too (its position may have shifted).
    assert!(resolve(&whole(&[Key::Nvml { index: 0, of: 2 }]), &boards).is_err());
    let r = resolve(&whole(&[Key::Nvml { index: 1, of: 2 }]), &boards).unwrap_err();
    assert!(r.0.contains("MIG"), "{r}");
    assert!(resolve(&whole(&[Key::Either { index: 1, of: 2 }]), &boards).is_err());
}

#[test]
fn a_board_named_twice_is_refused() {
    let boards = vec![board(0, 0)];
    assert!(resolve(
        &whole(&[Key::Minor(0), Key::Uuid("GPU-0000-board".into())]),
        &boards
    )
    .is_err());
    assert!(resolve(&whole(&[Key::Uuid("GPU-nope".into())]), &boards).is_err());
    assert!(resolve(&whole(&[Key::Minor(3)]), &boards).is_err());
}

#[test]
fn specs_round_trip_and_reject_garbage() {
    let sel = vec![
        Sel {
            key: Key::Minor(3),
            share: Share::Mps { n: 1, of: 1000 },
        },
        Sel {
            key: Key::Uuid("GPU-abc-1".into()),
            share: Share::Whole,
        },
        Sel {
            key: Key::Mig {
                minor: 0,
                gi: 1,
                ci: Some(0),
            },
            share: Share::Whole,
        },
        Sel {
            key: Key::Mig {
                minor: 0,
                gi: 2,
                ci: None,
            },
            share: Share::Whole,
        },
        Sel {
            key: Key::Nvml { index: 1, of: 4 },
            share: Share::Shard { n: 2, of: 8 },
        },
        Sel {
            key: Key::Either { index: 0, of: 1 },
            share: Share::Whole,
        },
    ];
    let spec = format_spec(&sel);
    assert_eq!(spec, "m3~mps1/1000,u:GPU-abc-1,g0.1.0,g0.2,n1/4~sh2/8,e0/1");
    assert_eq!(parse_spec(&spec).unwrap(), sel);
    for bad in [
        "x1",
        "m",
        "m-1",
        "n4/4",
        "u:foo",
        "g1",
        "g1.2.3.4",
        "m1~mps0",
        "m1~mps101",
        "m1~mps0/3",
        "m1~mps4/3",
        "m1~sh3/2",
        "m1~zz",
    ] {
        assert!(parse_spec(bad).is_none(), "{bad}");
    }
}

#[test]
fn proc_files_parse_as_the_driver_writes_them() {
    let (dev, devtext) = devices();
    let proc = proc_with(
        "parse",
        &[
            (dev, &devtext),
            (
                "driver/nvidia-caps/mig-minors",
                "config 1\nmonitor 2\ngpu1/gi3/access 40\ngpu1/gi3/ci2/access 43\nbad line\n",
            ),
        ],
    );
    // The block device of the same major is not the caps major.
    assert_eq!(proc.caps_major(), Some(CAPS));
    let m = proc.mig_minors().unwrap();
    assert_eq!(m.get(&40), Some(&(1, 3, None)));
    assert_eq!(m.get(&43), Some(&(1, 3, Some(2))));
    assert_eq!(m.get(&1), None);
    assert_eq!(proc_with("empty", &[]).caps_major(), None);
}

/// `scontrol --json show job` as Slurm 24.11-26.05 print it (data_parser v0.0.42-45:
/// `job_resources.nodes.allocation[]`, abridged), several jobs as for an array's id.
const JSON_2411: &str = r#"{"meta":{"plugin":{"data_parser":"data_parser/v0.0.42"}},"errors":[],"warnings":[],"jobs":[
 {"job_id":41,"name":"other","comment":"","gres_detail":["gpu:1(IDX:2)"],
  "job_resources":{"select_type":["CORE"],"nodes":{"count":1,"select_type":["AVAILABLE"],"list":"node1","whole":false,
   "allocation":[{"index":0,"name":"node1","cpus":{"count":1,"used":0},"memory":{"used":0,"allocated":0},
    "sockets":[{"index":0,"cores":[{"index":2,"status":["ALLOCATED"]}]}]}]},"cpus":1,"threads_per_core":{"set":true,"infinite":false,"number":1}}},
 {"job_id":42,"name":"wrap","gres_detail":["shard:2(0/2,2/2,0/2,0/2)","shard:2(2/2,0/2,0/2,0/2)"],
  "job_resources":{"nodes":{"count":2,"list":"node[1-2]","allocation":[{"index":0,"name":"node1"},{"index":1,"name":"node2"}]}}},
 {"job_id":43,"name":"wrap","gres_detail":["shard:1(1/2,0/2,0/2,0/2)","shard:1(1/2,0/2,0/2,0/2)","shard:1(1/2,0/2,0/2,0/2)"],
  "job_resources":{"nodes":{"count":3,"list":"node[1-3]","allocation":[{"index":0,"name":"node1"},{"index":1,"name":"node2"},{"index":2,"name":"node3"}]}}}
]}"#;

/// Slurm 22.05's `squeue --json` (openapi v0.0.38: `job_resources.allocated_nodes[]`,
/// every job): shards by index only.
const JSON_2205: &str = r#"{"meta":{"plugin":{"type":"openapi/v0.0.38"}},"errors":[],"jobs":[
 {"job_id":7,"name":"wrap","gres_detail":["shard:1(IDX:0)"],"nodes":"node1",
  "job_resources":{"nodes":"node1","allocated_cores":1,"allocated_hosts":1,
   "allocated_nodes":[{"sockets":{"0":{"cores":{"0":"allocated"}}},"nodename":"node1","cpus_used":0,"memory_used":0,"memory_allocated":0}]}},
 {"job_id":8,"name":"wrap","gres_detail":["gpu:1(IDX:0)"],
  "job_resources":{"nodes":"node1","allocated_nodes":[{"nodename":"node1"}]}},
 {"job_id":null,"gres_detail":[],"job_resources":null},
 {"job_id":9,"name":"pending"}
]}"#;

/// A job of one node and one GRES string, in the 24.11+ shape.
fn json_job(job: u32, node: &str, gres: &str) -> String {
    format!(
        r#"{{"jobs":[{{"job_id":{job},"gres_detail":["{gres}"],"job_resources":{{"nodes":{{"allocation":[{{"index":0,"name":"{node}"}}]}}}}}}]}}"#
    )
}

/// A node of four boards, /dev/nvidia0-3 in gres.conf, each with `per` shards (none: no
/// shard record).
fn four_boards<'a>(
    proc: &'a ProcFiles,
    stat: DevStat<'a>,
    per: Option<u64>,
    types: Option<Vec<(Option<String>, usize)>>,
) -> NodeGres<'a> {
    let all: Vec<String> = (0..4).map(|i| format!("/dev/nvidia{i}")).collect();
    NodeGres {
        files: all.iter().map(|f| vec![PathBuf::from(f)]).collect(),
        conf: NodeConf {
            shared: per
                .map(|n| SharedRecord {
                    name: "shard".into(),
                    count: Some(n * 4),
                    files: all.clone(),
                })
                .into_iter()
                .collect(),
            ..NodeConf::default()
        },
        types,
        proc,
        stat,
    }
}

fn asked(sel: Selection) -> Ask {
    match sel {
        Selection::Ask(a) => a,
        other => panic!("not an ask: {other:?}"),
    }
}

/// The sampler's side: this node's entry in slurmctld's JSON, decided against `ask`.
fn sampler_side(ask: &Ask, json: &str, job: u32, node: &str) -> Result<Vec<Sel>, Refusal> {
    from_slurmctld(
        ask,
        &parse_gres(&node_gres_json(json.as_bytes(), job, node)?)?,
    )
}

fn slots(list: &[(u32, Option<u64>)]) -> Vec<Slot> {
    list.iter()
        .map(|&(m, shards)| Slot {
            key: Key::Minor(m),
            shards,
            mps: None,
        })
        .collect()
}

#[test]
fn shard_nodes_ask_slurmctld_and_ordinary_nodes_never_do() {
    let proc = proc_with("ask", &[]);
    let stat = stat_table(&[]);
    let shards = four_boards(&proc, &stat, Some(2), None);
    let a = asked(choose(&job(&[1]), &shards).unwrap());
    assert_eq!(a.job_indices, vec![1]);
    assert_eq!(
        a.table,
        slots(&[(0, Some(2)), (1, Some(2)), (2, Some(2)), (3, Some(2))])
    );
    // select() alone still refuses: the environment does not tell.
    assert!(select(&job(&[1]), &shards).is_err());
    // Round trip through the sampler's argument.
    let spec = format_selection(&Selection::Ask(a.clone()));
    assert_eq!(spec, "ask:1:m0#2;m1#2;m2#2;m3#2");
    assert_eq!(parse_selection(&spec), Some(Selection::Ask(a.clone())));
    // A shard count given in the environment: no question.
    let mut j = job(&[1]);
    j.shards_on_node = Some("1".into());
    assert!(matches!(choose(&j, &shards).unwrap(), Selection::Known(_)));
    // No shards, one GPU type: the environment is enough, never a slurmctld call.
    for node in [
        four_boards(&proc, &stat, None, None),
        four_boards(&proc, &stat, None, Some(vec![(Some("aa".into()), 4)])),
    ] {
        let sel = choose(&job(&[0, 2]), &node).unwrap();
        assert_eq!(
            sel,
            Selection::Known(whole(&[Key::Minor(0), Key::Minor(2)]))
        );
        assert!(!format_selection(&sel).starts_with(ASK));
    }
    // Several types: asked, with no shard counts.
    let typed = four_boards(
        &proc,
        &stat,
        None,
        Some(vec![(Some("aa".into()), 2), (Some("zz".into()), 2)]),
    );
    let a = asked(choose(&job(&[2]), &typed).unwrap());
    assert!(a.table.iter().all(|s| s.shards.is_none()), "{a:?}");
    assert_eq!(format_selection(&Selection::Ask(a)), "ask:2:m0;m1;m2;m3");
    // An index past the node's GPUs is still refused in the prolog.
    let r = choose(&job(&[4]), &typed).unwrap_err();
    assert!(r.0.contains("gres index 4"), "{r}");
}

#[test]
fn shards_from_slurm_2411_and_2605_are_shared_per_board() {
    let proc = proc_with("ask2411", &[]);
    let stat = stat_table(&[]);
    let node = four_boards(&proc, &stat, Some(2), None);
    let boards: Vec<BoardInfo> = (0..4).map(|i| board(i, i)).collect();
    // Job 42 on node1: both shards of board 1, i.e. the whole board, as shards.
    let a = asked(choose(&job(&[1]), &node).unwrap());
    let sel = sampler_side(&a, JSON_2411, 42, "node1").unwrap();
    assert_eq!(
        sel,
        vec![Sel {
            key: Key::Minor(1),
            share: Share::Shard { n: 2, of: 2 }
        }]
    );
    let c = resolve(&sel, &boards).unwrap();
    assert_eq!((c[0].minor, c[0].share, c[0].rule), (1, 1.0, "shard"));
    // On node2 the same job holds board 0: the prolog there saw index 0.
    let a0 = asked(choose(&job(&[0]), &node).unwrap());
    let sel = sampler_side(&a0, JSON_2411, 42, "node2").unwrap();
    assert_eq!(sel[0].key, Key::Minor(0));
    // SLURM_JOB_GPUS and slurmctld disagree: refused.
    let r = sampler_side(&a, JSON_2411, 42, "node2").unwrap_err();
    assert!(r.0.contains("did not allocate"), "{r}");
    // Job 43, three nodes: one shard of two on board 0 of node2.
    let sel = sampler_side(&a0, JSON_2411, 43, "node2").unwrap();
    let c = resolve(&sel, &boards).unwrap();
    assert_eq!((c[0].minor, c[0].share, c[0].rule), (0, 0.5, "shard"));
    // A node the job does not have, a job with no record.
    for (job, host) in [(43, "node4"), (44, "node1")] {
        assert!(sampler_side(&a0, JSON_2411, job, host).is_err());
    }
    // A whole GPU on a shard node (job 41): whole.
    let a2 = asked(choose(&job(&[2]), &node).unwrap());
    let sel = sampler_side(&a2, JSON_2411, 41, "node1").unwrap();
    assert_eq!(sel, whole(&[Key::Minor(2)]));
    // gres.conf and slurmctld differ on the board's shards: refused.
    let four = asked(choose(&job(&[0]), &four_boards(&proc, &stat, Some(4), None)).unwrap());
    let r = sampler_side(&four, JSON_2411, 43, "node1").unwrap_err();
    assert!(r.0.contains("gres.conf 4"), "{r}");
}

#[test]
fn shards_from_slurm_2205_need_one_index_and_gres_conf_count() {
    let proc = proc_with("ask2205", &[]);
    let stat = stat_table(&[]);
    let node = four_boards(&proc, &stat, Some(4), None);
    let a = asked(choose(&job(&[0]), &node).unwrap());
    // squeue --json lists every job: job 7 is picked by its id.
    let sel = sampler_side(&a, JSON_2205, 7, "node1").unwrap();
    assert_eq!(sel[0].share, Share::Shard { n: 1, of: 4 });
    let c = resolve(&sel, &[board(0, 0), board(1, 1), board(2, 2), board(3, 3)]).unwrap();
    assert_eq!((c[0].share, c[0].rule), (0.25, "shard"));
    // A whole GPU on 22.05.
    let sel = sampler_side(&a, JSON_2205, 8, "node1").unwrap();
    assert_eq!(sel, whole(&[Key::Minor(0)]));
    // A pending job has no allocation: refused.
    assert!(sampler_side(&a, JSON_2205, 9, "node1").is_err());
    // Shards over two indices: the count per board is unknown.
    let a01 = asked(choose(&job(&[0, 1]), &node).unwrap());
    let r = sampler_side(&a01, &json_job(9, "node1", "shard:3(IDX:0-1)"), 9, "node1").unwrap_err();
    assert!(r.0.contains("24.05"), "{r}");
    // More shards than the board has.
    assert!(sampler_side(&a, &json_job(9, "node1", "shard:5(IDX:0)"), 9, "node1").is_err());
}

#[test]
fn typed_gpus_come_from_slurmctld_and_must_cover_slurm_job_gpus() {
    let proc = proc_with("asktyped", &[]);
    let stat = stat_table(&[]);
    let typed = Some(vec![(Some("aa".into()), 2), (Some("zz".into()), 2)]);
    let node = four_boards(&proc, &stat, None, typed.clone());
    let two = r#"{"jobs":[{"job_id":50,"gres_detail":["gpu:aa:1(IDX:0),gpu:zz:1(IDX:2)","gpu:aa:1(IDX:0),gpu:zz:1(IDX:2)"],"job_resources":{"allocated_nodes":[{"nodename":"node1"},{"nodename":"node2"}]}}]}"#;
    // The prolog saw only the last type's index.
    let a = asked(choose(&job(&[2]), &node).unwrap());
    let sel = sampler_side(&a, two, 50, "node2").unwrap();
    assert_eq!(sel, whole(&[Key::Minor(0), Key::Minor(2)]));
    // An index slurmctld did not give: refused.
    let a1 = asked(choose(&job(&[1]), &node).unwrap());
    assert!(sampler_side(&a1, two, 50, "node1").is_err());
    // Ranges and lists of indices.
    let ranges = json_job(51, "node1", "gpu:aa:2(IDX:0-1),gpu:zz:1(IDX:3)");
    let a3 = asked(choose(&job(&[3]), &node).unwrap());
    assert_eq!(
        sampler_side(&a3, &ranges, 51, "node1").unwrap(),
        whole(&[Key::Minor(0), Key::Minor(1), Key::Minor(3)])
    );
    // gpu and shard entries together, on a typed node with shards.
    let both = four_boards(&proc, &stat, Some(2), typed);
    let mixed = json_job(52, "node1", "gpu:aa:1(IDX:0),shard:zz:1(0/2,0/2,1/2,0/2)");
    let a2 = asked(choose(&job(&[2]), &both).unwrap());
    let sel = sampler_side(&a2, &mixed, 52, "node1").unwrap();
    assert_eq!(
        sel,
        vec![
            Sel {
                key: Key::Minor(0),
                share: Share::Whole
            },
            Sel {
                key: Key::Minor(2),
                share: Share::Shard { n: 1, of: 2 }
            }
        ]
    );
    // The same index as a GPU and as shards: refused.
    let twice = json_job(52, "node1", "gpu:aa:1(IDX:2),shard:zz:1(0/2,0/2,1/2,0/2)");
    assert!(sampler_side(&a2, &twice, 52, "node1").is_err());
    // One entry must be exactly SLURM_JOB_GPUS.
    let one = json_job(53, "node1", "gpu:zz:2(IDX:2-3)");
    let r = sampler_side(&a2, &one, 53, "node1").unwrap_err();
    assert!(r.0.contains("one entry"), "{r}");
}

/// A job whose owner wrote slurmctld-looking text into every field they control: name,
/// comment, working directory, output path (22.05 keeps the newlines, and `scontrol
/// show job -d` prints them raw). `gres` is slurmctld's own string for node1.
fn hostile(job: u32, gres: &str, shape_2205: bool) -> String {
    let fake = "x\n     Nodes=node1 CPU_IDs=0 Mem=0 GRES=shard:1(0/8,1/8,0/8,0/8)\nJobId=0\n   JobId=1 Nodes=node1 GRES=gpu:1(IDX:1)";
    let fake = serde_json::to_string(fake).unwrap();
    let nodes = if shape_2205 {
        r#""nodes":"node1","allocated_nodes":[{"nodename":"node1"}]"#.to_string()
    } else {
        r#""nodes":{"list":"node1","allocation":[{"index":0,"name":"node1"}]}"#.to_string()
    };
    format!(
        r#"{{"jobs":[{{"job_id":0,"name":{fake},"gres_detail":["gpu:4(IDX:0-3)"],"job_resources":{{{nodes}}}}},
{{"job_id":{job},"name":{fake},"comment":{fake},"current_working_directory":{fake},"standard_output":{fake},
 "admin_comment":"","gres_detail":["{gres}"],"job_resources":{{"select_type":{fake},{nodes}}}}}]}}"#
    )
}

#[test]
fn a_job_whose_text_forges_slurmctld_lines_is_charged_exactly_its_allocation() {
    let proc = proc_with("hostile", &[]);
    let stat = stat_table(&[]);
    let boards: Vec<BoardInfo> = (0..4).map(|i| board(i, i)).collect();
    let node = four_boards(&proc, &stat, Some(8), None);
    let a1 = asked(choose(&job(&[1]), &node).unwrap());
    for shape_2205 in [true, false] {
        // A whole GPU: the whole board, not the forged 1/8.
        let json = hostile(60, "gpu:1(IDX:1)", shape_2205);
        let c = resolve(&sampler_side(&a1, &json, 60, "node1").unwrap(), &boards).unwrap();
        assert_eq!((c.len(), c[0].minor, c[0].share), (1, 1, 1.0), "{json}");
        // Shards: its own 3 of 8, not a refusal (two detail lines) nor 1/8.
        let gres = if shape_2205 {
            "shard:3(IDX:1)"
        } else {
            "shard:3(0/8,3/8,0/8,0/8)"
        };
        let json = hostile(61, gres, shape_2205);
        let c = resolve(&sampler_side(&a1, &json, 61, "node1").unwrap(), &boards).unwrap();
        assert_eq!(
            (c.len(), c[0].minor, c[0].share),
            (1, 1, 3.0 / 8.0),
            "{json}"
        );
        // Bytes that are not UTF-8 in the owner's text do not make the answer unreadable.
        let mut raw = hostile(62, "gpu:1(IDX:1)", shape_2205).into_bytes();
        let at = raw.windows(6).position(|w| w == b"\"x\\n  ").unwrap() + 1;
        raw[at] = 0xff;
        let gres = node_gres_json(&raw, 62, "node1").unwrap();
        assert_eq!(gres, "gpu:1(IDX:1)");
    }
}

#[test]
fn slurmctld_json_not_understood_is_refused() {
    let ask = Ask {
        job_indices: vec![0],
        table: slots(&[(0, Some(2)), (1, Some(2)), (2, Some(2)), (3, Some(2))]),
    };
    for gres in [
        "",
        "gpu:1",
        "gpu:x(IDX:0)",
        "gpu:1(IDX:a)",
        "gpu:1(IDX:3-1)",
        "gpu:2(IDX:0)",
        "gpu:1(IDX:9)",
        "gpu:1(1/2)",
        "shard:1(1/2,0/2)",
        "shard:1(2/2,0/2,0/2,0/2)",
        "shard:3(3/2,0/2,0/2,0/2)",
        "shard:1(IDX:0",
        "shard:1(1/2,0/2,0/2,0/2))",
        "mps:50(IDX:0)",
        "gpu:a:b:1(IDX:0)",
        "nic:1(IDX:0)",
        "(null)",
        // A count without devices, and a shared entry whose details slurmctld could not
        // build (gres_stepmgr.c prints both).
        "gpu(CNT:1)",
        "shard:1((null))",
    ] {
        let json = json_job(5, "node1", gres);
        assert!(sampler_side(&ask, &json, 5, "node1").is_err(), "{gres}");
    }
    // The same shapes, well formed, are understood.
    for gres in ["gpu:1(IDX:0)", "shard:1(1/2,0/2,0/2,0/2)", "shard:1(IDX:0)"] {
        let json = json_job(5, "node1", gres);
        assert!(sampler_side(&ask, &json, 5, "node1").is_ok(), "{gres}");
    }
    for json in [
        "",
        "garbage",
        // Text as `scontrol show job -d` prints it.
        "JobId=5\n     Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)\n",
        r#"{"jobs":[]}"#,
        r#"{"jobs":[{"job_id":5}]}"#,
        r#"{"jobs":[{"job_id":"5","gres_detail":["gpu:1(IDX:0)"],"job_resources":{"allocated_nodes":[{"nodename":"node1"}]}}]}"#,
        // No GRES for the node, or no list of nodes to align gres_detail with.
        r#"{"jobs":[{"job_id":5,"gres_detail":[null],"job_resources":{"allocated_nodes":[{"nodename":"node1"}]}}]}"#,
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)"],"job_resources":{"nodes":"node1"}}]}"#,
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)"],"job_resources":{"nodes":{"allocation":[]}}}]}"#,
        // gres_detail and the nodes do not align.
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)"],"job_resources":{"allocated_nodes":[{"nodename":"node0"},{"nodename":"node1"}]}}]}"#,
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)","gpu:1(IDX:0)"],"job_resources":{"nodes":{"allocation":[{"index":1,"name":"node0"},{"index":0,"name":"node1"}]}}}]}"#,
        // The node twice, the job twice.
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)","gpu:1(IDX:1)"],"job_resources":{"allocated_nodes":[{"nodename":"node1"},{"nodename":"node1"}]}}]}"#,
        r#"{"jobs":[{"job_id":5,"gres_detail":["gpu:1(IDX:0)"],"job_resources":{"allocated_nodes":[{"nodename":"node1"}]}},{"job_id":5,"gres_detail":["gpu:1(IDX:0)"],"job_resources":{"allocated_nodes":[{"nodename":"node1"}]}}]}"#,
    ] {
        assert!(sampler_side(&ask, json, 5, "node1").is_err(), "{json}");
    }
    for bad in [
        "ask:",
        "ask:0",
        "ask:0:",
        "ask:4:m0;m1",
        "ask:x:m0",
        "ask:0:m0#0",
        "ask:0:m0#x",
        "ask:0:m0%0",
        "ask:0:m0%x",
        "ask:0:m0%4#2",
        "ask:0:zz",
        "ask:0,1:m0;m1",
    ] {
        assert!(parse_selection(bad).is_none(), "{bad}");
    }
    assert!(parse_spec("ask:0:m0").is_none());
    // Slot counts round trip.
    let a = parse_selection("ask:0:m0#4%1000;m1%3;m2").unwrap();
    assert_eq!(format_selection(&a), "ask:0:m0#4%1000;m1%3;m2");
}

/// A node of four boards with `Name=mps` records as given.
fn mps_node<'a>(
    proc: &'a ProcFiles,
    stat: DevStat<'a>,
    records: &[(u64, &[&str])],
) -> NodeGres<'a> {
    NodeGres {
        files: files(&[
            &["/dev/nvidia0"],
            &["/dev/nvidia1"],
            &["/dev/nvidia2"],
            &["/dev/nvidia3"],
        ]),
        conf: NodeConf {
            shared: records
                .iter()
                .map(|(count, files)| SharedRecord {
                    name: "mps".into(),
                    count: Some(*count),
                    files: files.iter().map(|f| f.to_string()).collect(),
                })
                .collect(),
            ..NodeConf::default()
        },
        types: None,
        proc,
        stat,
    }
}

fn mps_job(index: usize, percentage: &str) -> JobGpus {
    JobGpus {
        mps_percentage: Some(percentage.into()),
        ..job(&[index])
    }
}

#[test]
fn mps_shares_are_the_jobs_count_over_the_boards_exactly() {
    let proc = proc_with("mpsexact", &[]);
    let stat = stat_table(&[]);
    let boards: Vec<BoardInfo> = (0..4).map(|i| board(i, i)).collect();
    let all: &[&str] = &[
        "/dev/nvidia0",
        "/dev/nvidia1",
        "/dev/nvidia2",
        "/dev/nvidia3",
    ];
    // 1000 MPS a board: mps:1 is 0.1% of the board. Slurm's percentage says 1 (at least 1).
    let node = mps_node(&proc, &stat, &[(4000, all)]);
    let a = asked(choose(&mps_job(1, "1"), &node).unwrap());
    assert_eq!(a.table[1].mps, Some(1000));
    assert_eq!(
        format_selection(&Selection::Ask(a.clone())),
        "ask:1:m0%1000;m1%1000;m2%1000;m3%1000"
    );
    // select() alone refuses: the percentage is not the count.
    assert!(select(&mps_job(1, "1"), &node).is_err());
    // 24.05+: slurmctld gives the count per board.
    let sel = sampler_side(
        &a,
        &json_job(70, "node1", "mps:1(0/1000,1/1000,0/1000,0/1000)"),
        70,
        "node1",
    )
    .unwrap();
    assert_eq!(
        sel,
        vec![Sel {
            key: Key::Minor(1),
            share: Share::Mps { n: 1, of: 1000 }
        }]
    );
    let c = resolve(&sel, &boards).unwrap();
    assert_eq!((c[0].minor, c[0].share, c[0].rule), (1, 0.001, "mps"));
    // 22.05: `mps:1(IDX:1)`, the board's count from gres.conf.
    let sel = sampler_side(&a, &json_job(70, "node1", "mps:1(IDX:1)"), 70, "node1").unwrap();
    assert_eq!(resolve(&sel, &boards).unwrap()[0].share, 0.001);
    // The sampler's argument carries the exact fraction.
    assert_eq!(format_spec(&sel), "m1~mps1/1000");
    assert_eq!(parse_spec("m1~mps1/1000").unwrap(), sel);
    // 3 a board, one record per board: mps:1 is a third, mps:2 two thirds.
    let three: Vec<(u64, &[&str])> = all.iter().map(|f| (3, std::slice::from_ref(f))).collect();
    let node = mps_node(&proc, &stat, &three);
    let a = asked(choose(&mps_job(2, "33"), &node).unwrap());
    for (gres, want) in [
        ("mps:1(IDX:2)", 1.0 / 3.0),
        ("mps:2(IDX:2)", 2.0 / 3.0),
        ("mps:1(0/3,0/3,1/3,0/3)", 1.0 / 3.0),
        ("mps:2(0/3,0/3,2/3,0/3)", 2.0 / 3.0),
    ] {
        let sel = sampler_side(&a, &json_job(71, "node1", gres), 71, "node1").unwrap();
        let c = resolve(&sel, &boards).unwrap();
        assert_eq!((c[0].minor, c[0].rule), (2, "mps"), "{gres}");
        assert!((c[0].share - want).abs() < 1e-12, "{gres}: {}", c[0].share);
    }
    // slurmctld and gres.conf disagree on the board's count; more than the board has;
    // on an index SLURM_JOB_GPUS does not name; over two boards without counts per board.
    for gres in [
        "mps:1(0/3,0/3,1/4,0/3)",
        "mps:4(IDX:2)",
        "mps:1(IDX:1)",
        "mps:2(IDX:1-2)",
        "mps:0(IDX:2)",
    ] {
        assert!(
            sampler_side(&a, &json_job(71, "node1", gres), 71, "node1").is_err(),
            "{gres}"
        );
    }
}

#[test]
fn mps_counts_per_board_are_shared_out_as_slurmd_does() {
    let proc = proc_with("mpsdist", &[]);
    let stat = stat_table(&[]);
    let counts = |records: &[(u64, &[&str])], gpus: usize| -> Vec<Option<u64>> {
        let mut node = mps_node(&proc, &stat, records);
        node.files.truncate(gpus);
        asked(choose(&mps_job(0, "1"), &node).unwrap())
            .table
            .iter()
            .map(|s| s.mps)
            .collect()
    };
    // One record without File=: what is left over the GPUs left (gres_c_s.c
    // _distribute_count): 100 over 3 is 33, 33, 34; 10 over 4 is 2, 2, 3, 3.
    assert_eq!(counts(&[(100, &[])], 3), [Some(33), Some(33), Some(34)]);
    assert_eq!(
        counts(&[(10, &[])], 4),
        [Some(2), Some(2), Some(3), Some(3)]
    );
    // File= lists: Count / files each, the remainder lost; a GPU without one has none.
    assert_eq!(
        counts(
            &[
                (5, &["/dev/nvidia0", "/dev/nvidia1"]),
                (7, &["/dev/nvidia3"])
            ],
            4
        ),
        [Some(2), Some(2), None, Some(7)]
    );
    // 22.05's answer on a board whose count is 34 of an uneven 100: 1/34.
    let mut node = mps_node(&proc, &stat, &[(100, &[])]);
    node.files.truncate(3);
    let a = asked(choose(&mps_job(2, "2"), &node).unwrap());
    let sel = sampler_side(&a, &json_job(72, "node1", "mps:1(IDX:2)"), 72, "node1").unwrap();
    assert_eq!(sel[0].share, Share::Mps { n: 1, of: 34 });
    // No count in gres.conf (AutoDetect, or an unreadable record): 24.05+ still gives
    // the board's count; 22.05's form is refused.
    let none = mps_node(&proc, &stat, &[]);
    let a = asked(choose(&mps_job(0, "10"), &none).unwrap());
    assert!(a.table.iter().all(|s| s.mps.is_none()));
    let sel = sampler_side(
        &a,
        &json_job(73, "node1", "mps:30(30/300,0/300,0/300,0/300)"),
        73,
        "node1",
    )
    .unwrap();
    assert_eq!(sel[0].share, Share::Mps { n: 30, of: 300 });
    let r = sampler_side(&a, &json_job(73, "node1", "mps:30(IDX:0)"), 73, "node1").unwrap_err();
    assert!(r.0.contains("no mps count"), "{r}");
}

proptest::proptest! {
    /// Whatever gres.conf's files (MIG caps among them) and the job's indices, a selection
    /// names only boards of the files at the job's indices.
    #[test]
    fn selections_name_only_the_allocated_indices_boards(
        gres_devices in proptest::collection::vec(
            proptest::collection::vec((proptest::bool::ANY, 0u32..12), 1..4), 1..8),
        indices in proptest::collection::vec(0usize..10, 1..5),
    ) {
        let (dev, devtext) = devices();
        let proc = proc_with(
            "prop",
            &[
                (dev, &devtext),
                (
                    "driver/nvidia-caps/mig-minors",
                    "gpu0/gi1/access 3\ngpu0/gi1/ci0/access 4\ngpu5/gi2/access 7\n",
                ),
            ],
        );
        let stat = stat_table(&[]);
        let files: Vec<Vec<PathBuf>> = gres_devices
            .iter()
            .map(|d| {
                d.iter()
                    .map(|&(cap, n)| {
                        PathBuf::from(if cap {
                            format!("/dev/nvidia-caps/nvidia-cap{n}")
                        } else {
                            format!("/dev/nvidia{n}")
                        })
                    })
                    .collect()
            })
            .collect();
        let node = NodeGres {
            files: files.clone(),
            conf: NodeConf::default(),
            types: None,
            proc: &proc,
            stat: &stat,
        };
        let mut indices = indices;
        indices.sort_unstable();
        indices.dedup();
        let allowed: Vec<u32> = indices
            .iter()
            .filter_map(|&i| files.get(i))
            .flatten()
            .filter_map(|f| f.to_str()?.strip_prefix("/dev/nvidia")?.parse().ok())
            .collect();
        if let Ok(sel) = select(&job(&indices), &node) {
            for s in &sel {
                let m = match s.key {
                    Key::Minor(m) | Key::Mig { minor: m, .. } => m,
                    ref k => panic!("{k:?}"),
                };
                proptest::prop_assert!(allowed.contains(&m), "{m} not in {allowed:?}");
            }
        }
    }
}
