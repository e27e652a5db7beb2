//! The fake NVML (tests/fake-nvml) through the real nvml-wrapper code of `NvmlHost`: what
//! `boards()` and `power()` make of a configuration, with no cluster and no GPU.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use spank_carbon::gpu::{BoardInfo, GpuHost, MigInstance, NvmlHost, PowerKind};

/// The fake library, built once per test binary.
fn built() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        // Inside another release's root (scripts/test.sh) there is no C compiler: the fake
        // library test.sh built there from the same source serves.
        let cluster = Path::new("/var/lib/spank-carbon-cluster/fake-nvml/libnvidia-ml.so.1");
        if !Path::new("/usr/bin/cc").exists() && !Path::new("/usr/bin/gcc").exists() {
            assert!(
                cluster.exists(),
                "no C compiler and no fake NVML built for the cluster at {}",
                cluster.display()
            );
            return cluster.to_path_buf();
        }
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-nvml-lib");
        let status = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fake-nvml/build.sh"
        ))
        .arg(&out)
        .status()
        .unwrap();
        assert!(status.success(), "building the fake NVML");
        out.join("libnvidia-ml.so.1")
    })
}

/// A copy of the library in a directory of its own with `conf` beside it (the fake reads
/// the `fake-nvml.conf` next to the loaded file, so each test loads its own copy).
fn with_config(test: &str, conf: &str) -> PathBuf {
    assert!(
        std::env::var_os("FAKE_NVML_CONFIG").is_none(),
        "FAKE_NVML_CONFIG would override the tests' configurations"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-nvml-{test}"));
    fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libnvidia-ml.so.1");
    fs::copy(built(), &lib).unwrap();
    fs::write(dir.join("fake-nvml.conf"), conf).unwrap();
    lib
}

const TWO_BOARDS: &str = "\
epoch 1700000000
gpu * 3 0xc1 250000 arch=7 name=NVIDIA-A100-SXM4-80GB sm=108 mig_sm=98 mig=1 uuid=GPU-board-c1
gpu * 5 0x41 300000 sm=132 name=H100
mig * 3 1 0 42 uuid=MIG-first
mig * 3 2 0 28
mig * 3 2 1 14
";

#[test]
fn boards_and_mig_instances_come_from_the_config() {
    let host = NvmlHost::open(Some(&with_config("boards", TWO_BOARDS))).unwrap();
    let boards = host.boards().unwrap();
    let mig = |gi, ci, sm_count, uuid: &str| MigInstance {
        gi,
        ci,
        sm_count,
        uuid: uuid.into(),
    };
    assert_eq!(
        boards,
        [
            // NVML's order is the PCI bus's, not the config's or the minors'.
            BoardInfo {
                index: 0,
                minor: 5,
                uuid: "GPU-fake-default-5".into(),
                pci_bus_id: "00000000:41:00.0".into(),
                name: "H100".into(),
                mig: false,
                sm_count: Some(132),
                instances: vec![],
                mig_sm_count: None,
            },
            BoardInfo {
                index: 1,
                minor: 3,
                uuid: "GPU-board-c1".into(),
                pci_bus_id: "00000000:C1:00.0".into(),
                name: "NVIDIA-A100-SXM4-80GB".into(),
                mig: true,
                sm_count: Some(108),
                instances: vec![
                    mig(1, 0, 42, "MIG-first"),
                    mig(2, 0, 28, "MIG-fake-default-3-2-0"),
                    mig(2, 1, 14, "MIG-fake-default-3-2-1"),
                ],
                mig_sm_count: Some(98),
            },
        ]
    );
    // The MIG board's energy and power are the whole board's, as before.
    let gpus = host.open_minors(&[3]).unwrap();
    assert!(gpus[0].shared());
    assert!(gpus[0].energy().unwrap().unwrap() > 0);
    assert_eq!(gpus[0].power().unwrap().mw.0, 250_000.0);
}

#[test]
fn a_board_that_does_not_tell_its_sms_has_none() {
    let conf = TWO_BOARDS.replace("sm=132", "sm=132 board_attrs=0");
    let host = NvmlHost::open(Some(&with_config("noattrs", &conf))).unwrap();
    let boards = host.boards().unwrap();
    assert_eq!(boards[0].sm_count, None);
    assert_eq!(boards[1].sm_count, Some(108));
    // A MIG board that does not tell: what MIG can hand out still shows, and its
    // instances still tell theirs.
    let conf = TWO_BOARDS.replace("sm=108", "sm=108 board_attrs=0");
    let host = NvmlHost::open(Some(&with_config("noattrs-mig", &conf))).unwrap();
    let b = &host.boards().unwrap()[1];
    assert_eq!((b.sm_count, b.mig_sm_count), (None, Some(98)));
    let sms: Vec<u32> = b.instances.iter().map(|m| m.sm_count).collect();
    assert_eq!(sms, [42, 28, 14]);
}

#[test]
fn impossible_mig_layouts_are_refused() {
    for (test, conf) in [
        // 42 + 28 + 14 + 15 SMs > the 98 that MIG can hand out
        ("mig-sms", format!("{TWO_BOARDS}mig * 3 3 0 15\n")),
        // the H100 is not in MIG mode
        ("mig-mode", format!("{TWO_BOARDS}mig * 5 1 0 10\n")),
        // no board with minor 4
        ("mig-board", format!("{TWO_BOARDS}mig * 4 1 0 10\n")),
        // gi 2 ci 1 twice
        ("mig-twice", format!("{TWO_BOARDS}mig * 3 2 1 2\n")),
        // more SMs for MIG than the board has
        ("mig-sm", TWO_BOARDS.replace("mig_sm=98", "mig_sm=109")),
        // a uuid that is already a MIG device's
        (
            "mig-uuid",
            format!("{TWO_BOARDS}mig * 3 3 0 2 uuid=MIG-first\n"),
        ),
    ] {
        let err = NvmlHost::open(Some(&with_config(test, &conf)))
            .err()
            .unwrap_or_else(|| panic!("{test}: the fake accepted {conf}"));
        assert!(err.to_string().contains("initialised"), "{test}: {err}");
    }
    // The same lines within the limits are accepted.
    let ok = format!("{TWO_BOARDS}mig * 3 3 0 14\n");
    let host = NvmlHost::open(Some(&with_config("mig-ok", &ok))).unwrap();
    assert_eq!(host.boards().unwrap()[1].instances.len(), 4);
}

#[test]
fn power_says_what_it_read() {
    // minor: (config options, what power() should say)
    let cases = [
        (0, "", PowerKind::Average1s),           // Hopper: both fields
        (1, "fields=inst", PowerKind::Instant),  // only the instant field
        (2, "fields=avg", PowerKind::Average1s), // only the mean field
        (3, "arch=7 name=NVIDIA-A100-SXM4-40GB", PowerKind::Instant), // GA100: no fields
        (4, "arch=7 name=NVIDIA-A40", PowerKind::Average1s), // other Ampere
        (5, "arch=5 name=Tesla-V100", PowerKind::Instant), // Volta
        (6, "arch=9 fields=none", PowerKind::Average1s), // Hopper, old driver
    ];
    let mut conf = String::from("epoch 1700000000\n");
    for (minor, opts, _) in &cases {
        conf += &format!(
            "gpu * {minor} {:x} {} {opts}\n",
            0x10 + minor,
            100_000 + 1000 * minor
        );
    }
    let host = NvmlHost::open(Some(&with_config("power", &conf))).unwrap();
    let minors: Vec<u32> = cases.iter().map(|c| c.0).collect();
    let gpus = host.open_minors(&minors).unwrap();
    for ((minor, opts, kind), g) in cases.iter().zip(&gpus) {
        // Twice: the second read goes the way the first one settled on.
        for _ in 0..2 {
            let r = g.power().unwrap();
            assert_eq!(r.kind, *kind, "minor {minor} ({opts})");
            assert_eq!(r.mw.0, f64::from(100_000 + 1000 * minor), "minor {minor}");
        }
    }
}

#[test]
fn a_failing_power_read_is_an_error_on_every_path() {
    let conf =
        "epoch 1700000000\ngpu * 0 1 100000 fail=power\ngpu * 1 2 100000 fail=power fields=none\n";
    let host = NvmlHost::open(Some(&with_config("failpower", conf))).unwrap();
    for g in host.open_all().unwrap() {
        assert!(g.power().is_err(), "minor {}", g.minor());
        assert!(g.energy().unwrap().is_some());
    }
}

/// The MIG calls as nvml-wrapper makes them, beyond what `boards()` uses: a MIG device
/// found by its uuid knows its board, and has no power or energy of its own.
#[test]
fn mig_handles_behave_as_nvml_documents() {
    use nvml_wrapper::error::NvmlError;
    use nvml_wrapper::structs::device::FieldId;
    use nvml_wrapper::Nvml;

    let lib = with_config("mig-handles", TWO_BOARDS);
    let nvml = Nvml::builder().lib_path(lib.as_os_str()).init().unwrap();
    let board = nvml.device_by_uuid("GPU-board-c1").unwrap();
    let plain = nvml.device_by_index(0).unwrap();
    assert_eq!(board.mig_device_count().unwrap(), 7);
    assert_eq!(plain.mig_device_count().unwrap(), 0);
    assert!(!board.mig_is_mig_device_handle().unwrap());
    // Three MIG devices: slot 3 is free, slot 7 does not exist.
    assert!(matches!(
        board.mig_device_by_index(3),
        Err(NvmlError::NotFound)
    ));
    assert!(matches!(
        board.mig_device_by_index(7),
        Err(NvmlError::InvalidArg)
    ));
    assert!(plain.mig_device_by_index(0).is_err());

    let m = nvml.device_by_uuid("MIG-first").unwrap();
    assert!(m.mig_is_mig_device_handle().unwrap());
    assert_eq!(
        m.mig_parent_device().unwrap().uuid().unwrap(),
        "GPU-board-c1"
    );
    assert_eq!(m.attributes().unwrap().multiprocessor_count, 42);
    assert_eq!(
        board.mig_device_by_index(0).unwrap().uuid().unwrap(),
        "MIG-first"
    );
    assert!(matches!(m.power_usage(), Err(NvmlError::NotSupported)));
    assert!(matches!(
        m.total_energy_consumption(),
        Err(NvmlError::NotSupported)
    ));
    let fields = m.field_values_for(&[FieldId(185), FieldId(186)]).unwrap();
    assert!(fields
        .iter()
        .all(|f| matches!(f, Ok(s) if matches!(s.value, Err(NvmlError::NotSupported)))));
    // The A100 (arch=7) has no power fields (the fake's default before Hopper); the
    // H100 has both, and no other field.
    let board_fields = board.field_values_for(&[FieldId(185)]).unwrap();
    assert!(matches!(&board_fields[0], Ok(s) if s.value.is_err()));
    let plain_fields = plain
        .field_values_for(&[FieldId(185), FieldId(186), FieldId(191)])
        .unwrap();
    let ok: Vec<bool> = plain_fields
        .iter()
        .map(|f| matches!(f, Ok(s) if s.value.is_ok()))
        .collect();
    assert_eq!(
        ok,
        [true, true, false],
        "field 191 is not one the fake serves"
    );
}
