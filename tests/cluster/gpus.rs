//! The right GPUs on every configuration a site writes (issue 10), on the real cluster of
//! each Slurm release: gres.conf `File=` lists, two typed records, `AutoDetect=nvidia`
//! (24.11+) over the NVIDIA driver's files (scripts/cluster.sh fake-driver), MIG instances
//! (`MultipleFiles=` with nvidia-caps devices), shards, MPS and UUIDs (26.05 `env_uuid`).
//!
//! The truth of which boards a job holds is Slurm's own: the job's gres indices (the job
//! records its SLURM_JOB_GPUS) taken through the node's device list as slurmd itself
//! builds it (`slurmd -G -N node`, one `Name=gpu` line per index, in index order; its
//! `Index=` is the device number, not the position). The truth of energy is the fake
//! GPUs' logged counter readings. Every scene restores the standard cluster when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The boards of every scene: minor -> PCI bus as the standard fake NVML config has them
/// (NVML's order is neither the minor's nor Slurm's index order).
fn fake_driver_gpus() -> String {
    (0..4u32)
        .map(|m| {
            format!(
                "0000:{:02x}:00.0:{m}:NVIDIA_H100_80GB_HBM3",
                pci_bus_of_minor(m)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fake NVML's boards with the UUIDs the driver's files give (`GPU-fake-<minor>`, as
/// real NVML and /proc/driver/nvidia agree), plus `extra` options per minor.
fn driver_consistent_gpus(extra: &[(u32, &str)]) {
    let mut options = GpuOptions::new();
    for n in nodes() {
        for m in 0..4u32 {
            let more = extra
                .iter()
                .filter(|(x, _)| *x == m)
                .map(|(_, o)| *o)
                .collect::<Vec<_>>()
                .join(" ");
            options.insert((n.clone(), m), format!("uuid=GPU-fake-{m} {more}"));
        }
    }
    write_fake_config(&options);
}

/// The prolog's selection for the job on `node`, from its local record (`found_by`).
fn found_by(job: u32, node: &str) -> String {
    local_record(job, node)
        .and_then(|r| r["found_by"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("job {job} on {node}: no found_by in the local record"))
}

/// The running Slurm release as a number like 2411.
fn release() -> u32 {
    let v = run("/usr/sbin/slurmd", &["-V"]);
    let v = v.split_whitespace().nth(1).expect("slurmd -V");
    let mut it = v.split('.');
    let major: u32 = it.next().unwrap().parse().unwrap();
    let minor: u32 = it.next().unwrap().parse().unwrap();
    major * 100 + minor
}

/// Slurm's own device list of `name` (gpu, shard, mps) on `node`: the files of each gres
/// index, as slurmd prints its final list (index order where slurmd sorted it: AutoDetect).
/// A record of Count=N takes N indices, one file each; MultipleFiles: one index, all files.
fn slurm_index_files(node: &str, name: &str) -> Vec<Vec<String>> {
    let out = Command::new("/usr/sbin/slurmd")
        .args(["-G", "-N", node])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.contains(&format!("Gres Name={name} ")))
        .flat_map(|l| {
            let count: usize = l
                .split(" Count=")
                .nth(1)
                .and_then(|c| c.split_whitespace().next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            let files = l
                .split(" File=")
                .nth(1)
                .and_then(|f| f.split_whitespace().next())
                .unwrap_or("");
            if count == 1 || name != "gpu" {
                vec![files.split(',').map(str::to_string).collect::<Vec<_>>()]
            } else {
                spank_carbon::slurm::hostlist::expand(files)
                    .unwrap()
                    .into_iter()
                    .map(|f| vec![f])
                    .collect()
            }
        })
        .collect();
    assert!(!lines.is_empty(), "slurmd -G -N {node}: no {name}:\n{text}");
    lines
}

/// The minor of the board among a gres index's files (the nvidia major, 195, below 255).
fn board_minor(files: &[String]) -> u32 {
    let boards: Vec<u32> = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .filter(|m| m.file_type().is_char_device())
        .map(|m| m.rdev())
        .filter(|&r| rustix_major(r) == 195 && rustix_minor(r) < 255)
        .map(rustix_minor)
        .collect();
    assert_eq!(boards.len(), 1, "one board among {files:?}: {boards:?}");
    boards[0]
}

fn rustix_major(dev: u64) -> u32 {
    rustix::fs::major(dev)
}

fn rustix_minor(dev: u64) -> u32 {
    rustix::fs::minor(dev)
}

/// Submits a one-node batch job that records its gres environment (jobs/<id>.env).
fn submit_env(node: &str, gres: &str, secs: f64) -> u32 {
    submit_env_with(node, gres, secs, &[])
}

/// [`submit_env`] with more sbatch options (`extra`, before `--wrap`).
fn submit_env_with(node: &str, gres: &str, secs: f64, extra: &[&str]) -> u32 {
    let jobs_dir = dir("jobs");
    fs::create_dir_all(&jobs_dir).unwrap();
    let script = format!(
        "env | /usr/bin/grep -E '^(SLURM_JOB_GPUS|CUDA_VISIBLE_DEVICES|SLURM_SHARDS_ON_NODE|CUDA_MPS_ACTIVE_THREAD_PERCENTAGE)=' > {0}/$SLURM_JOB_ID.tmp; mv {0}/$SLURM_JOB_ID.tmp {0}/$SLURM_JOB_ID.env; sleep {secs}",
        jobs_dir.display()
    );
    let gres = format!("--gres={gres}");
    let mut args = vec![
        "--parsable",
        "-o",
        "/dev/null",
        "-e",
        "/dev/null",
        "-N1",
        "-w",
        node,
        &gres,
    ];
    args.extend(extra);
    args.extend(["--wrap", &script]);
    let out = run("/usr/bin/sbatch", &args);
    out.trim().split(';').next().unwrap().parse().unwrap()
}

/// The job's gres environment as it recorded it (waits for the job to start).
fn job_env(job: u32) -> BTreeMap<String, String> {
    let path = dir("jobs").join(format!("{job}.env"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The boards (minors) Slurm gave the job on `node`: its indices through Slurm's list.
fn slurm_boards(job: u32, node: &str) -> BTreeSet<u32> {
    let env = job_env(job);
    let idx = env
        .get("SLURM_JOB_GPUS")
        .unwrap_or_else(|| panic!("job {job}: no SLURM_JOB_GPUS in {env:?}"));
    let files = slurm_index_files(node, "gpu");
    idx.split(',')
        .map(|i| board_minor(&files[i.parse::<usize>().unwrap()]))
        .collect()
}

/// The boards whose counters the plugin read for the job on `node` (fake NVML's log), and
/// the energy of each between its first and last reading, Wh.
fn read_boards(job: u32, node: &str) -> BTreeMap<u32, f64> {
    truth(job)
        .get(node)
        .map(|m| {
            m.iter()
                .map(|(minor, (a, b))| (*minor, (b.mj - a.mj) as f64 / 3.6e6))
                .collect()
        })
        .unwrap_or_default()
}

fn record_of(job: u32) -> Rec {
    assert_eq!(wait_job(job), "COMPLETED", "job {job}");
    let text = wait_delivered(job, "SystemComment", Duration::from_secs(60));
    parse_rec(&text).unwrap_or_else(|| panic!("job {job}: no record: {text:?}"))
}

/// Whole boards: the plugin read exactly the boards Slurm allocated (`want`), and the
/// node's part is their energy.
fn check_whole_boards(job: u32, node: &str, want: &BTreeSet<u32>) {
    let rec = record_of(job);
    let count = want.len();
    let read = read_boards(job, node);
    assert_eq!(
        &read.keys().copied().collect::<BTreeSet<_>>(),
        want,
        "job {job} on {node}: boards read vs allocated by Slurm"
    );
    let truth: f64 = read.values().sum();
    assert!(
        truth > 0.05,
        "job {job}: the boards' truth {truth} Wh is trivial"
    );
    assert_close(
        &format!("job {job} {node} wh"),
        rec.node_num(node, "wh"),
        truth,
        0.01,
    );
    assert_eq!(rec.nodes[node]["gpus"], count.to_string(), "{rec:?}");
}

/// Standard four files per node, but two types listed in an order that is neither the
/// files' nor slurm.conf's: each job must get the boards of its own type.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn two_typed_gpu_records_each_job_gets_its_type() {
    let mut gres = String::from("AutoDetect=off\n");
    for n in nodes() {
        let d = dir("dev").join(&n);
        gres.push_str(&format!(
            "NodeName={n} Name=gpu Type=zz File={0}/nvidia3,{0}/nvidia1\nNodeName={n} Name=gpu Type=aa File={0}/nvidia[0,2]\n",
            d.display()
        ));
    }
    let _scene = Scene::new(
        "typed",
        &[
            ("SC_GRES_CONF", &gres),
            ("SC_NODE_GRES", "gpu:aa:2,gpu:zz:2"),
        ],
        None,
    );
    let aa = submit_env("node3", "gpu:aa:2", 3.0);
    let zz = submit_env("node3", "gpu:zz:2", 3.0);
    // All of a type: whatever Slurm's index order, the boards are that type's files.
    let minors =
        |files: &[usize]| -> BTreeSet<u32> { files.iter().map(|&i| minor_of_file(i)).collect() };
    check_whole_boards(aa, "node3", &minors(&[0, 2]));
    check_whole_boards(zz, "node3", &minors(&[3, 1]));
    assert_no_node_drained();
}

/// 24.11+: `AutoDetect=nvidia` with no File= at all; slurmd reads the driver's files.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn autodetect_nvidia_finds_the_allocated_boards() {
    if release() < 2411 {
        eprintln!(
            "AutoDetect=nvidia is not in Slurm {}: nothing to test",
            release()
        );
        return;
    }
    let gpus = fake_driver_gpus();
    let _scene = Scene::new(
        "autodetect-nvidia",
        &[("SC_GRES_CONF", "AutoDetect=nvidia")],
        Some(&[("SC_FAKE_GPUS", &gpus)]),
    );
    driver_consistent_gpus(&[]);
    // Slurm's order is the device files' (/dev/nvidia0..3), NVML's the PCI bus order.
    let files = slurm_index_files("node2", "gpu");
    assert_eq!(files.len(), 4, "{files:?}");
    let a = submit_env("node2", "gpu:2", 3.0);
    let b = submit_env("node2", "gpu:1", 3.0);
    // Slurm's final list after AutoDetect is sorted by file: index i is /dev/nvidia<i>.
    for (i, f) in files.iter().enumerate() {
        assert_eq!(f, &[format!("/dev/nvidia{i}")], "{files:?}");
    }
    let got_a = slurm_boards(a, "node2");
    let got_b = slurm_boards(b, "node2");
    assert_eq!((got_a.len(), got_b.len()), (2, 1), "{got_a:?} {got_b:?}");
    assert!(got_a.is_disjoint(&got_b), "{got_a:?} {got_b:?}");
    check_whole_boards(a, "node2", &got_a);
    check_whole_boards(b, "node2", &got_b);
    assert_no_node_drained();
}

/// The share rule of a node's part and the board-equivalents it charged (`sh:RULE_EQ`).
fn share_of(rec: &Rec, node: &str) -> Option<(String, f64)> {
    let sh = rec.nodes.get(node)?.get("sh")?;
    let (rule, eq) = sh.rsplit_once('_')?;
    Some((rule.to_string(), eq.parse().ok()?))
}

/// A shared board: the plugin read exactly Slurm's board, and charged `share` of its
/// energy, saying which rule and marking the figure as an estimate; the local record
/// keeps the whole board's energy.
fn check_shared_board(job: u32, node: &str, board: u32, rule: &str, share: f64) {
    let rec = record_of(job);
    let read = read_boards(job, node);
    assert_eq!(
        read.keys().copied().collect::<Vec<_>>(),
        [board],
        "job {job} on {node}: boards read"
    );
    let whole = read[&board];
    assert!(
        whole > 0.05,
        "job {job}: the board's truth {whole} Wh is trivial"
    );
    assert!(share > 0.0 && share < 1.0, "a share, not a board: {share}");
    assert_close(
        &format!("job {job} {node} shared wh"),
        rec.node_num(node, "wh"),
        whole * share,
        0.01,
    );
    let (r, eq) = share_of(&rec, node).unwrap_or_else(|| panic!("no share token: {rec:?}"));
    assert_eq!(r, rule, "{rec:?}");
    assert_close("board-equivalents", eq, share, 0.001);
    let flags = node_flags(&rec, node);
    assert!(flags.iter().any(|f| f == "estimate"), "{flags:?}");
    let local = local_record(job, node).expect("the local record");
    let text = local.to_string();
    assert!(text.contains(rule), "local record names the rule: {text}");
}

/// The shard, MPS and gpu configuration of the four standard files on every node.
fn sharing_gres(name: &str, count: u32) -> String {
    let mut gres = String::from("AutoDetect=off\n");
    for n in nodes() {
        let d = dir("dev").join(&n);
        gres.push_str(&format!(
            "NodeName={n} Name=gpu File={0}/nvidia[0-3]\nNodeName={n} Name={name} Count={count} File={0}/nvidia[0-3]\n",
            d.display()
        ));
    }
    gres
}

/// `gres/mps` with 3 MPS a board (12 over the four files), a count that does not divide
/// 100: Slurm's CUDA_MPS_ACTIVE_THREAD_PERCENTAGE says 33 for `mps:1` and 66 for
/// `mps:2`; the jobs are charged exactly 1/3 and 2/3 of their board (the count from
/// slurmctld's JSON, the board's from slurmctld on 24.11+ and gres.conf on 22.05). A
/// whole-GPU job on the same node is charged its whole board.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn mps_jobs_are_charged_their_count_of_the_board() {
    let gres = sharing_gres("mps", 12);
    let _scene = Scene::new(
        "mps",
        &[
            ("SC_GRES_CONF", &gres),
            ("SC_GRES_TYPES", "gpu,mps"),
            ("SC_NODE_GRES", "gpu:4,mps:12"),
        ],
        None,
    );
    let one = submit_env("node4", "mps:1", 3.0);
    let two = submit_env("node4", "mps:2", 3.0);
    let gpu = submit_env("node4", "gpu:1", 3.0);
    for (job, pct, share) in [(one, "33", 1.0 / 3.0), (two, "66", 2.0 / 3.0)] {
        let boards = slurm_boards(job, "node4");
        assert_eq!(boards.len(), 1, "{boards:?}");
        // Slurm's own rounded percentage: not what is charged.
        assert_eq!(job_env(job)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], pct);
        check_shared_board(job, "node4", *boards.iter().next().unwrap(), "mps", share);
        assert!(found_by(job, "node4").starts_with("ask:"));
    }
    let whole = slurm_boards(gpu, "node4");
    check_whole_boards(gpu, "node4", &whole);
    assert!(share_of(&record_of(gpu), "node4").is_none());
    assert_no_node_drained();
}

/// `gres/shard`: the prolog sees only the board (SLURM_JOB_GPUS), the same as a whole-GPU
/// job's; the job's shards come from slurmctld. 8 shards over 4 boards: 2 a board.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn shard_jobs_are_charged_their_shards_of_the_board() {
    let gres = sharing_gres("shard", 8);
    let _scene = Scene::new(
        "shard",
        &[
            ("SC_GRES_CONF", &gres),
            ("SC_GRES_TYPES", "gpu,shard"),
            ("SC_NODE_GRES", "gpu:4,shard:8"),
        ],
        None,
    );
    let shard = submit_env("node1", "shard:1", 3.0);
    let gpu = submit_env("node1", "gpu:2", 3.0);
    let boards = slurm_boards(shard, "node1");
    assert_eq!(boards.len(), 1, "{boards:?}");
    check_shared_board(shard, "node1", *boards.iter().next().unwrap(), "shard", 0.5);
    let whole = slurm_boards(gpu, "node1");
    check_whole_boards(gpu, "node1", &whole);
    assert!(share_of(&record_of(gpu), "node1").is_none());
    assert_no_node_drained();
}

/// Text a job's owner controls, forging `scontrol show job -d` lines: a detail line that
/// names node1 with another GRES, a `JobId=0` that ended the job's record for a text
/// reader, a 22.05-style index line.
const FORGED_NAME: &str = "evil\n     Nodes=node1 CPU_IDs=0 Mem=0 GRES=shard:2(2/2,0/2,0/2,0/2)\nJobId=0\n   JobId=0 Nodes=node1 GRES=gpu:1(IDX:3)";
const FORGED_COMMENT: &str =
    "x\n   Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)\n     Nodes=node1 GRES=shard:1(IDX:2)";

/// Job text is never parsed as structure (issue 17): on the shard scene (where the
/// sampler asks slurmctld), jobs whose name and comment hold newlines and
/// `JobId=`/`Nodes=`/`GRES=` look-alikes, one renamed with `scontrol update name=` while
/// held (before its sampler asks) and one while running, are each charged exactly their
/// allocation: a shard job 1/2 of its board, a whole-GPU job its board. Also checks that
/// Slurm kept the newlines (docs/REFERENCE.md says so per release).
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn forged_job_text_does_not_move_the_charge() {
    let gres = sharing_gres("shard", 8);
    let _scene = Scene::new(
        "shard-forged",
        &[
            ("SC_GRES_CONF", &gres),
            ("SC_GRES_TYPES", "gpu,shard"),
            ("SC_NODE_GRES", "gpu:4,shard:8"),
        ],
        None,
    );
    let name = format!("--job-name={FORGED_NAME}");
    let comment = format!("--comment={FORGED_COMMENT}");
    let forged: &[&str] = &[&name, &comment];
    let shard = submit_env_with("node1", "shard:1", 4.0, forged);
    let gpu = submit_env_with("node1", "gpu:1", 4.0, forged);
    // Renamed while held, then released: the sampler asks with the forged name in place.
    let held = submit_env_with("node1", "shard:1", 4.0, &["--hold", &comment]);
    let id = format!("jobid={held}");
    run(
        "/usr/bin/scontrol",
        &["update", &id, &format!("name={FORGED_NAME}")],
    );
    run("/usr/bin/scontrol", &["release", &held.to_string()]);
    // Renamed while running.
    wait_running(shard);
    let id = format!("jobid={shard}");
    run(
        "/usr/bin/scontrol",
        &["update", &id, &format!("name={FORGED_NAME}\nJobId=0")],
    );
    // Slurm kept the newlines: the forged lines print as lines of their own.
    let text = run(
        "/usr/bin/scontrol",
        &["show", "job", "-d", &gpu.to_string()],
    );
    for forged in [
        "\n     Nodes=node1 CPU_IDs=0 Mem=0 GRES=shard:2(2/2,0/2,0/2,0/2)\n",
        "\n   Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)\n",
    ] {
        assert!(
            text.contains(forged),
            "Slurm {} did not keep the newline (docs/REFERENCE.md says it does): {text}",
            release()
        );
    }
    for job in [shard, held] {
        let boards = slurm_boards(job, "node1");
        assert_eq!(boards.len(), 1, "job {job}: {boards:?}");
        check_shared_board(job, "node1", *boards.iter().next().unwrap(), "shard", 0.5);
        assert!(found_by(job, "node1").starts_with("ask:"));
    }
    let whole = slurm_boards(gpu, "node1");
    assert_eq!(whole.len(), 1, "{whole:?}");
    check_whole_boards(gpu, "node1", &whole);
    assert!(share_of(&record_of(gpu), "node1").is_none());
    assert_no_node_drained();
}

/// 26.05: with AutoDetect the prolog gets the boards' UUIDs (CUDA_VISIBLE_DEVICES), the
/// most direct key there is; `AutoDetect=full` falls back to the driver's files where
/// Slurm has no NVML (Debian's).
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn uuids_from_slurm_find_the_boards() {
    if release() < 2605 {
        eprintln!(
            "Slurm {} gives no UUIDs to the prolog: nothing to test",
            release()
        );
        return;
    }
    let gpus = fake_driver_gpus();
    for conf in [
        "AutoDetect=nvidia\nName=gpu Flags=env_uuid",
        "AutoDetect=full",
    ] {
        let _scene = Scene::new(
            "uuid",
            &[("SC_GRES_CONF", conf)],
            Some(&[("SC_FAKE_GPUS", &gpus)]),
        );
        driver_consistent_gpus(&[]);
        let a = submit_env("node1", "gpu:3", 3.0);
        let boards = slurm_boards(a, "node1");
        assert_eq!(boards.len(), 3);
        check_whole_boards(a, "node1", &boards);
        // The prolog found them by the UUIDs Slurm gave, not by a re-derived order.
        let how = found_by(a, "node1");
        for m in &boards {
            assert!(how.contains(&format!("GPU-fake-{m}")), "{conf}: {how}");
        }
        assert_no_node_drained();
    }
}

/// MIG (`MultipleFiles=` of the board and its nvidia-caps, as Slurm writes for MIG): board
/// minor 1 split into two instances of 60 and 32 of its 132 SMs (the rest unallocated),
/// board minor 0 whole. Each MIG job is charged its instance's share of the board's
/// compute; the whole board's job its whole board; nothing else.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn mig_instances_are_charged_their_share_of_the_board() {
    let gpus = fake_driver_gpus();
    // mig-minors: "gpu<minor>/gi<G>/access" and ".../ci<C>/access" -> nvidia-cap minors.
    let mig = "config=1 monitor=2 gpu1/gi1/access=12 gpu1/gi1/ci0/access=13 gpu1/gi2/access=21 gpu1/gi2/ci0/access=22";
    let sms: BTreeMap<u32, u32> = [(12, 60), (21, 32)].into(); // gi access cap -> SMs
    let mut gres = String::from("AutoDetect=off\n");
    for n in nodes() {
        gres.push_str(&format!(
            "NodeName={n} Name=gpu MultipleFiles=/dev/nvidia1,/dev/nvidia-caps/nvidia-cap12,/dev/nvidia-caps/nvidia-cap13\n\
             NodeName={n} Name=gpu MultipleFiles=/dev/nvidia1,/dev/nvidia-caps/nvidia-cap21,/dev/nvidia-caps/nvidia-cap22\n\
             NodeName={n} Name=gpu File=/dev/nvidia0\n"
        ));
    }
    let _scene = Scene::new(
        "mig",
        &[("SC_GRES_CONF", &gres), ("SC_NODE_GRES", "gpu:3")],
        Some(&[("SC_FAKE_GPUS", &gpus), ("SC_FAKE_MIG", mig)]),
    );
    driver_consistent_gpus(&[(1, "mig=1 sm=132")]);
    let conf = fake_dir().join("fake-nvml.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str("mig * 1 1 0 60\nmig * 1 2 0 32\n");
    fs::write(&conf, text).unwrap();

    let jobs: Vec<u32> = (0..3).map(|_| submit_env("node2", "gpu:1", 3.0)).collect();
    let files = slurm_index_files("node2", "gpu");
    let mut mig_jobs = 0;
    for &job in &jobs {
        let idx: usize = job_env(job)["SLURM_JOB_GPUS"].parse().unwrap();
        let f = &files[idx];
        let board = board_minor(f);
        let caps: Vec<u32> = f
            .iter()
            .filter_map(|p| p.strip_prefix("/dev/nvidia-caps/nvidia-cap"))
            .map(|c| c.parse().unwrap())
            .collect();
        match caps.first().and_then(|c| sms.get(c)) {
            Some(&sm) => {
                assert_eq!(board, 1);
                check_shared_board(job, "node2", 1, "mig-sm", sm as f64 / 132.0);
                mig_jobs += 1;
            }
            None => {
                assert_eq!(board, 0, "{f:?}");
                check_whole_boards(job, "node2", &[0].into());
            }
        }
    }
    assert_eq!(mig_jobs, 2, "both instances were used");
    assert_no_node_drained();
}

/// Refuse to guess: a MIG record whose nvidia-caps devices the driver's mig-minors does not
/// name cannot be tied to an instance. The job runs, nothing is charged for that node (no
/// counter read for the job, no part), and slurmd's log says why; the node stays up.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn a_gpu_that_cannot_be_identified_is_not_charged() {
    let gpus = fake_driver_gpus();
    let mig = "config=1 monitor=2 gpu1/gi1/access=12 gpu1/gi1/ci0/access=13";
    let mut gres = String::from("AutoDetect=off\n");
    for n in nodes() {
        gres.push_str(&format!(
            "NodeName={n} Name=gpu MultipleFiles=/dev/nvidia1,/dev/nvidia-caps/nvidia-cap12,/dev/nvidia-caps/nvidia-cap13\n"
        ));
    }
    let _scene = Scene::new(
        "unidentified",
        &[("SC_GRES_CONF", &gres), ("SC_NODE_GRES", "gpu:1")],
        Some(&[("SC_FAKE_GPUS", &gpus), ("SC_FAKE_MIG", mig)]),
    );
    driver_consistent_gpus(&[(1, "mig=1 sm=132")]);
    let conf = fake_dir().join("fake-nvml.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str("mig * 1 1 0 60\n");
    fs::write(&conf, text).unwrap();
    // The caps devices stay; the driver's table of them loses its entries.
    fs::write(
        "/proc/driver/nvidia-caps/mig-minors",
        "config 1\nmonitor 2\n",
    )
    .unwrap();
    let job = submit_env("node3", "gpu:1", 2.0);
    assert_eq!(wait_job(job), "COMPLETED");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = format!("job {job}.node3: no measurement on this node");
    while !slurmd_log("node3").contains(&line) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = slurmd_log("node3");
    let why = log
        .lines()
        .find(|l| l.contains(&line))
        .unwrap_or_else(|| panic!("no refusal for job {job} in node3's log"));
    assert!(why.contains("mig-minors"), "{why}");
    assert!(
        read_boards(job, "node3").is_empty(),
        "a counter was read for job {job}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!field(job, "SystemComment").contains("spank-carbon/1"));
    assert_no_node_drained();
}

/// Two typed records and a job that asks for both types: each gres entry overwrites
/// SLURM_JOB_GPUS in the prolog (only the last type's boards are there), so the sampler asks
/// slurmctld for the node's allocation and charges both boards.
#[test]
#[ignore = "needs the local Slurm cluster: run scripts/test.sh"]
fn a_job_of_two_gpu_types_is_charged_both() {
    let mut gres = String::from("AutoDetect=off\n");
    for n in nodes() {
        let d = dir("dev").join(&n);
        gres.push_str(&format!(
            "NodeName={n} Name=gpu Type=zz File={0}/nvidia3,{0}/nvidia1\nNodeName={n} Name=gpu Type=aa File={0}/nvidia[0,2]\n",
            d.display()
        ));
    }
    let _scene = Scene::new(
        "two-types",
        &[
            ("SC_GRES_CONF", &gres),
            ("SC_NODE_GRES", "gpu:aa:2,gpu:zz:2"),
        ],
        None,
    );
    let job = submit(&["-N1", "-w", "node4", "--gres=gpu:aa:1,gpu:zz:1"], 3.0);
    let rec = record_of(job);
    // Slurm's own view, from the job: one board of each type.
    let want: BTreeSet<u32> = allocated_indices(job, "node4")
        .iter()
        .map(|&i| typed_minor(i))
        .collect();
    assert_eq!(want.len(), 2, "{want:?}");
    let read = read_boards(job, "node4");
    let got: BTreeSet<u32> = read.keys().copied().collect();
    // Whatever the order: one board of each type's files.
    let of = |files: &[usize]| {
        files
            .iter()
            .map(|&i| minor_of_file(i))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(got.intersection(&of(&[0, 2])).count(), 1, "{got:?}");
    assert_eq!(got.intersection(&of(&[3, 1])).count(), 1, "{got:?}");
    assert_eq!(got, want, "the boards at slurmctld's indices");
    let truth: f64 = read.values().sum();
    assert!(truth > 0.05, "{truth}");
    assert_close("two types' wh", rec.node_num("node4", "wh"), truth, 0.01);
    assert_eq!(rec.nodes["node4"]["gpus"], "2");
    assert!(found_by(job, "node4").starts_with("ask:"));
    assert_no_node_drained();
}

/// The gres indices of `scontrol show job -d` (recorded by the job): `IDX:0,2` or several
/// typed entries `gpu:aa:1(IDX:0),gpu:zz:1(IDX:2)`.
fn allocated_indices(job: u32, node: &str) -> Vec<usize> {
    let text = fs::read_to_string(dir("jobs").join(format!("{job}.show"))).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("Nodes={node} ")))
        .unwrap_or_else(|| panic!("no Nodes={node} in {text}"));
    let mut out = Vec::new();
    for part in line.split("IDX:").skip(1) {
        let list = part.split(')').next().unwrap();
        for item in list.split(',') {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
        }
    }
    out
}

/// Slurm's order on the typed nodes above, as slurmd 22.05-26.05 builds it from slurm.conf's
/// `gpu:aa:2,gpu:zz:2`: the aa records' files (nvidia0, nvidia2), then zz's (nvidia3, nvidia1).
fn typed_minor(index: usize) -> u32 {
    minor_of_file([0, 2, 3, 1][index])
}
