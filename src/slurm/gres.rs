//! From SLURM_JOB_GPUS (gres indices) to GPU device minor numbers.
//!
//! A gres index is a position in the node's list of GPU device files, built the way
//! Slurm 22.05's slurmd builds it (src/common/gres.c, src/plugins/gres/common/gres_common.c):
//! gres.conf's `Name=` lines first, then the `NodeName=` lines that name this node, each
//! group in file order; when slurm.conf gives the node typed GPUs (`Gres=gpu:a100:2,...`)
//! records are taken type by type in that order, up to each type's count; every file of
//! `File=` (a host-list expression) then takes the next index. The index is neither the
//! /dev/nvidiaN number nor NVML's index (PCI order): the file's device minor is what
//! identifies the GPU to NVML.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::slurm::hostlist;

#[derive(Debug, thiserror::Error)]
pub enum GresError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad SLURM_JOB_GPUS `{0}`")]
    BadIndexList(String),
    #[error("gres index {index} is not in {path}'s GPU files for node {node} ({count} files)")]
    NoSuchIndex {
        index: usize,
        path: String,
        node: String,
        count: usize,
    },
    #[error("{0}: not a character device")]
    NotDevice(String),
    #[error("{path}: bad host list in `{value}`")]
    BadList { path: String, value: String },
}

#[derive(Debug, Clone, PartialEq)]
struct Record {
    ty: Option<String>,
    files: Vec<String>,
    multiple: bool,
}

/// A `Name=shard` or `Name=mps` record of gres.conf that applies to the node.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRecord {
    /// `shard` or `mps`.
    pub name: String,
    /// `Count=` (suffixes K/M/G as Slurm reads them); `None` when absent or bad.
    pub count: Option<u64>,
    /// The device files of `File=`/`Files=` (empty: the count is spread over the GPUs).
    pub files: Vec<String>,
}

/// What gres.conf says about one node beyond its GPU files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConf {
    /// `AutoDetect=` of the node's `NodeName=` lines, else the global one, lower case.
    pub autodetect: Option<String>,
    /// `Name=gpu` records of the node without a `File=` (AutoDetect fills them): their
    /// total `Count=`.
    pub gpus_without_file: u64,
    /// `Name=gpu` records with `File=`/`MultipleFiles=`.
    pub gpus_with_file: usize,
    pub shared: Vec<SharedRecord>,
}

#[derive(Default)]
struct Parsed {
    by_name: Vec<Record>,
    by_node: Vec<Record>,
    conf: NodeConf,
    node_autodetect: Option<String>,
}

/// Parses SLURM_JOB_GPUS: comma-separated indices (ranges `a-b` accepted).
pub fn parse_indices(s: &str) -> Result<Vec<usize>, GresError> {
    let bad = || GresError::BadIndexList(s.chars().take(64).collect());
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if b < a || b > 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn key_values(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

fn read(path: &Path) -> Result<String, GresError> {
    fs::read_to_string(path).map_err(|source| GresError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Slurm's `Count=` value: a number with an optional K, M or G suffix (x1024).
fn parse_count(v: &str) -> Option<u64> {
    let (digits, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1024),
        'm' | 'M' => (&v[..v.len() - 1], 1024 * 1024),
        'g' | 'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The GPU records of gres.conf (and its `Include`s) that apply to `node`, in Slurm's
/// order: `Name=` lines, then `NodeName=` lines; with the node's AutoDetect and its
/// shard and MPS records.
fn gpu_records(path: &Path, node: &str, depth: u32, out: &mut Parsed) -> Result<(), GresError> {
    let text = read(path)?;
    let bad_list = |value: &str| GresError::BadList {
        path: path.display().to_string(),
        value: value.to_string(),
    };
    for line in text.lines().map(strip_comment) {
        let trimmed = line.trim();
        if let Some(inc) = trimmed
            .strip_prefix("Include ")
            .or_else(|| trimmed.strip_prefix("include "))
        {
            if depth < 4 {
                let inc = Path::new(inc.trim());
                let inc = if inc.is_absolute() {
                    inc.to_path_buf()
                } else {
                    path.parent().unwrap_or(Path::new("/")).join(inc)
                };
                gpu_records(&inc, node, depth + 1, out)?;
            }
            continue;
        }
        let kv = key_values(trimmed);
        let Some((first, _)) = kv.first() else {
            continue;
        };
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let for_node = if first == "nodename" {
            let nodes = get("nodename").unwrap_or("");
            let names = hostlist::expand(nodes).map_err(|_| bad_list(nodes))?;
            if !names.iter().any(|n| n == node) {
                continue;
            }
            true
        } else {
            false
        };
        if let Some(a) = get("autodetect") {
            let a = a.to_ascii_lowercase();
            if for_node {
                out.node_autodetect = Some(a);
            } else if get("name").is_none() {
                out.conf.autodetect = Some(a);
            }
        }
        let Some(name) = get("name").map(str::to_ascii_lowercase) else {
            continue;
        };
        let files_value = get("file").or(get("files"));
        if name == "shard" || name == "mps" {
            let files = match files_value {
                Some(f) => hostlist::expand(f).map_err(|_| bad_list(f))?,
                None => Vec::new(),
            };
            out.conf.shared.push(SharedRecord {
                name,
                count: get("count").and_then(parse_count),
                files,
            });
            continue;
        }
        if name != "gpu" {
            continue;
        }
        let (files_value, multiple) = match (files_value, get("multiplefiles")) {
            (Some(f), _) => (f, false),
            (None, Some(f)) => (f, true),
            (None, None) => {
                // File-less records: dropped by slurmd unless AutoDetect fills them.
                out.conf.gpus_without_file += get("count").and_then(parse_count).unwrap_or(1);
                continue;
            }
        };
        out.conf.gpus_with_file += 1;
        let files = hostlist::expand(files_value).map_err(|_| bad_list(files_value))?;
        let record = Record {
            ty: get("type").map(str::to_ascii_lowercase),
            files,
            multiple,
        };
        if for_node {
            out.by_node.push(record);
        } else {
            out.by_name.push(record);
        }
    }
    Ok(())
}

/// What gres.conf says about `node` besides its GPU files: AutoDetect, file-less GPU
/// records, shard and MPS records.
pub fn node_conf(gres_conf: &Path, node: &str) -> Result<NodeConf, GresError> {
    let mut parsed = Parsed::default();
    gpu_records(gres_conf, node, 0, &mut parsed)?;
    let mut conf = parsed.conf;
    if parsed.node_autodetect.is_some() {
        conf.autodetect = parsed.node_autodetect;
    }
    Ok(conf)
}

/// slurm.conf's text with its `Include`s in place (relative to slurm.conf's directory,
/// as slurmd reads them; globs and nesting past 8 are skipped); `None` when slurm.conf
/// itself cannot be read.
pub fn slurm_conf_text(path: &Path) -> Option<String> {
    fn inline(text: &str, dir: &Path, depth: u32, out: &mut String) {
        for line in text.lines() {
            let trimmed = strip_comment(line).trim();
            let target = trimmed
                .split_once(char::is_whitespace)
                .filter(|(k, _)| k.eq_ignore_ascii_case("include"))
                .map(|(_, t)| t.trim());
            match target {
                Some(t) if !t.contains('*') && depth < 8 => {
                    if let Ok(inc) = fs::read_to_string(dir.join(t)) {
                        inline(&inc, dir, depth + 1, out);
                    }
                }
                Some(_) => {}
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let text = fs::read_to_string(path).ok()?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut out = String::new();
    inline(&text, dir, 0, &mut out);
    Some(out)
}

/// slurm.conf's path as slurmd and Slurm's tools find it: `SLURM_CONF` (absolute; slurmd
/// sets it to the file it read, configless: its cached copy), else /etc/slurm/slurm.conf.
pub fn slurm_conf_path() -> PathBuf {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"))
}

/// Whether slurm.conf's text (its `Include`s in place) configures an energy plugin
/// (`AcctGatherEnergyType`, the last one given): a value that is present, non-empty, not
/// `(null)` and does not contain `none`. 22.05 has an `acct_gather_energy/none` plugin
/// (its default); 24.11 and later turn any value containing `none` into no plugin.
pub fn energy_plugin_configured(slurm_conf: &str) -> bool {
    let mut value = None;
    for line in slurm_conf.lines().map(strip_comment) {
        for (k, v) in key_values(line) {
            if k == "acctgatherenergytype" {
                value = Some(v);
            }
        }
    }
    value.is_some_and(|v| {
        let v = v
            .trim()
            .trim_matches(['"', '\''])
            .trim()
            .to_ascii_lowercase();
        !v.is_empty() && v != "(null)" && !v.contains("none")
    })
}

/// Whether Slurm measures jobs' energy itself (an energy plugin in the slurm.conf at
/// `path`, see [`energy_plugin_configured`]). `None` when slurm.conf cannot be read.
pub fn slurm_measures_energy_at(path: &Path) -> Option<bool> {
    slurm_conf_text(path).map(|text| energy_plugin_configured(&text))
}

/// [`slurm_measures_energy_at`] the node's slurm.conf ([`slurm_conf_path`]); when it
/// cannot be read, says so and takes Slurm to measure energy (the cautious answer: a
/// non-zero energy TRES is then left to Slurm).
pub fn slurm_measures_energy() -> bool {
    let path = slurm_conf_path();
    slurm_measures_energy_at(&path).unwrap_or_else(|| {
        log::warn!(
            "cannot read {} to see whether Slurm measures energy (AcctGatherEnergyType): a non-zero energy TRES is taken to be Slurm's own",
            path.display()
        );
        true
    })
}

/// The node's GPU gres from slurm.conf (`Gres=gpu:a100:2,gpu:1`) as (type, count), in order.
pub fn node_gpu_types(slurm_conf: &str, node: &str) -> Option<Vec<(Option<String>, usize)>> {
    let mut default = None;
    let mut found = None;
    for line in slurm_conf.lines().map(strip_comment) {
        let kv = key_values(line);
        let Some((first, names)) = kv.first() else {
            continue;
        };
        if first != "nodename" {
            continue;
        }
        let Some((_, gres)) = kv.iter().find(|(k, _)| k == "gres") else {
            continue;
        };
        let parsed = parse_gres_spec(gres);
        if names.eq_ignore_ascii_case("default") {
            default = Some(parsed);
        } else if hostlist::expand(names).is_ok_and(|n| n.iter().any(|n| n == node)) {
            found = Some(parsed);
        }
    }
    found.or(default)
}

fn parse_gres_spec(spec: &str) -> Vec<(Option<String>, usize)> {
    let mut depth = 0;
    let cleaned: String = spec
        .chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect();
    cleaned
        .split(',')
        .filter_map(|item| {
            let mut fields = item.split(':');
            if fields.next()? != "gpu" {
                return None;
            }
            let rest: Vec<&str> = fields.collect();
            let count = |s: &str| s.parse::<usize>().ok();
            match rest.as_slice() {
                [] => Some((None, 1)),
                [c] if count(c).is_some() => Some((None, count(c)?)),
                [t] => Some((Some(t.to_ascii_lowercase()), 1)),
                [t, c, ..] => Some((Some(t.to_ascii_lowercase()), count(c).unwrap_or(1))),
            }
        })
        .collect()
}

/// Applies slurm.conf's per-type counts to the records, as slurmd's merge does.
fn select_by_types(records: Vec<Record>, types: &[(Option<String>, usize)]) -> Vec<Record> {
    let mut pool: Vec<Option<Record>> = records.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for (ty, count) in types {
        let mut left = *count;
        for slot in pool.iter_mut() {
            if left == 0 {
                break;
            }
            let matches = match (slot.as_ref(), ty) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(r), Some(t)) => r.ty.as_deref() == Some(t.as_str()),
            };
            if !matches {
                continue;
            }
            let mut r = slot.take().expect("checked");
            let n = if r.multiple { 1 } else { r.files.len() };
            if n > left && !r.multiple {
                r.files.truncate(left);
            }
            left -= n.min(left);
            out.push(r);
        }
    }
    out
}

/// Device files per gres index for `node`: index i -> the files of GPU i.
pub fn gpu_files(
    gres_conf: &Path,
    slurm_conf: Option<&Path>,
    node: &str,
) -> Result<Vec<Vec<PathBuf>>, GresError> {
    let mut parsed = Parsed::default();
    gpu_records(gres_conf, node, 0, &mut parsed)?;
    let mut records = parsed.by_name;
    records.extend(parsed.by_node);
    if let Some(types) = slurm_conf
        .and_then(slurm_conf_text)
        .and_then(|text| node_gpu_types(&text, node))
        .filter(|t| !t.is_empty())
    {
        records = select_by_types(records, &types);
    }
    let mut out = Vec::new();
    for r in records {
        if r.multiple {
            out.push(r.files.iter().map(PathBuf::from).collect());
        } else {
            for f in r.files {
                // slurmd skips (without using up an index) a file that exists but is
                // not a device.
                if let Ok(meta) = fs::metadata(&f) {
                    let ft = meta.file_type();
                    if !ft.is_char_device() && !ft.is_block_device() {
                        continue;
                    }
                }
                out.push(vec![PathBuf::from(f)]);
            }
        }
    }
    Ok(out)
}

/// The minor number of a GPU's device file.
pub fn device_minor(path: &Path) -> Result<u32, GresError> {
    let meta = fs::metadata(path).map_err(|source| GresError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !meta.file_type().is_char_device() {
        return Err(GresError::NotDevice(path.display().to_string()));
    }
    Ok(rustix::fs::minor(meta.rdev()))
}

/// The device minors of the GPUs with the given gres indices on `node`.
pub fn minors_for(
    indices: &[usize],
    gres_conf: &Path,
    slurm_conf: Option<&Path>,
    node: &str,
) -> Result<Vec<u32>, GresError> {
    let files = gpu_files(gres_conf, slurm_conf, node)?;
    let mut minors = Vec::new();
    for &index in indices {
        let paths = files.get(index).ok_or_else(|| GresError::NoSuchIndex {
            index,
            path: gres_conf.display().to_string(),
            node: node.to_string(),
            count: files.len(),
        })?;
        for p in paths {
            let m = device_minor(p)?;
            if !minors.contains(&m) {
                minors.push(m);
            }
        }
    }
    Ok(minors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sc-gres-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(files: &[Vec<PathBuf>]) -> Vec<String> {
        files.iter().map(|f| f[0].display().to_string()).collect()
    }

    #[test]
    fn indices_parse() {
        assert_eq!(parse_indices("0,2").unwrap(), [0, 2]);
        assert_eq!(parse_indices("3,0-1").unwrap(), [0, 1, 3]);
        assert!(parse_indices("a").is_err());
        assert!(parse_indices("0-99999").is_err());
    }

    #[test]
    fn name_lines_come_before_nodename_lines() {
        let d = tmp("order");
        let g = write(
            &d,
            "gres.conf",
            "# comment\nNodeName=n[1-2] Name=gpu File=/x/n[0-1]\nName=gpu File=/x/a[3-4] # all nodes\nNodeName=n3 Name=gpu File=/x/other\nnodename=n1 name=gpu file=/x/z,/x/y\nName=mps Count=100\n",
        );
        let f = gpu_files(&g, None, "n1").unwrap();
        assert_eq!(
            names(&f),
            ["/x/a3", "/x/a4", "/x/n0", "/x/n1", "/x/z", "/x/y"]
        );
        let f = gpu_files(&g, None, "n3").unwrap();
        assert_eq!(names(&f), ["/x/a3", "/x/a4", "/x/other"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn slurm_conf_types_order_and_truncate() {
        // The order seen from slurmd -G: zz before aa, aa records in list order, extra cut.
        let d = tmp("types");
        let g = write(
            &d,
            "gres.conf",
            "NodeName=n1 Name=gpu Type=aa File=/d/t[5-6]\nName=gpu Type=zz File=/d/t12,/d/t3\nNodeName=n1 Name=gpu Type=aa File=/d/t2\nNodeName=n1 Name=gpu Type=zz File=/d/t30\n",
        );
        let s = write(
            &d,
            "slurm.conf",
            "NodeName=DEFAULT CPUs=2\nNodeName=n[1-4] Gres=gpu:zz:2,gpu:aa:3(S:0-1) CPUs=4\n",
        );
        let f = gpu_files(&g, Some(&s), "n1").unwrap();
        assert_eq!(names(&f), ["/d/t12", "/d/t3", "/d/t5", "/d/t6", "/d/t2"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn node_conf_reads_autodetect_and_shared_records() {
        let d = tmp("nodeconf");
        write(
            &d,
            "more.conf",
            "NodeName=n[1-2] Name=mps Count=2K File=/dev/nvidia[0-1]\n",
        );
        let g = write(
            &d,
            "gres.conf",
            "AutoDetect=nvml\nNodeName=n2 AutoDetect=off\nName=gpu Type=a100 Count=4\nNodeName=n1 Name=shard Count=16 File=/dev/nvidia[0-1]\nNodeName=n3 Name=shard Count=8\nName=gpu File=/dev/nvidia7\nInclude more.conf\n",
        );
        let c = node_conf(&g, "n1").unwrap();
        assert_eq!(c.autodetect.as_deref(), Some("nvml"));
        assert_eq!((c.gpus_without_file, c.gpus_with_file), (4, 1));
        assert_eq!(
            c.shared,
            [
                SharedRecord {
                    name: "shard".into(),
                    count: Some(16),
                    files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
                },
                SharedRecord {
                    name: "mps".into(),
                    count: Some(2048),
                    files: vec!["/dev/nvidia0".into(), "/dev/nvidia1".into()],
                }
            ]
        );
        // The node's own AutoDetect wins; other nodes' records are not its.
        let c = node_conf(&g, "n2").unwrap();
        assert_eq!(c.autodetect.as_deref(), Some("off"));
        assert_eq!(c.shared.len(), 1);
        assert_eq!(node_conf(&g, "n3").unwrap().shared[0].files.len(), 0);
        assert_eq!(parse_count("3M"), Some(3 * 1024 * 1024));
        assert_eq!(parse_count("x"), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn slurm_conf_includes_give_the_node_its_types() {
        let d = tmp("include");
        write(&d, "nodes.conf", "NodeName=n1 Gres=gpu:zz:1,gpu:aa:1\n");
        let s = write(
            &d,
            "slurm.conf",
            "ClusterName=c\ninclude nodes.conf\nInclude missing.conf\nInclude *.conf\n",
        );
        let text = slurm_conf_text(&s).unwrap();
        assert_eq!(
            node_gpu_types(&text, "n1"),
            Some(vec![(Some("zz".into()), 1), (Some("aa".into()), 1)])
        );
        assert!(slurm_conf_text(&d.join("none.conf")).is_none());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn energy_plugin_from_slurm_conf() {
        let c = energy_plugin_configured;
        assert!(!c("ClusterName=c\n"));
        assert!(!c("AcctGatherEnergyType=acct_gather_energy/none\n"));
        assert!(!c(
            "acctgatherenergytype=acct_gather_energy/None # 22.05's default\n"
        ));
        assert!(!c("AcctGatherEnergyType=\n"));
        assert!(!c("AcctGatherEnergyType=(null)\n"));
        assert!(!c("#AcctGatherEnergyType=acct_gather_energy/ipmi\n"));
        assert!(c("AcctGatherEnergyType=acct_gather_energy/ipmi\n"));
        assert!(c("JobAcctGatherType=jobacct_gather/linux AcctGatherEnergyType=acct_gather_energy/gpu,acct_gather_energy/rapl\n"));
        // The last one given counts.
        assert!(!c("AcctGatherEnergyType=acct_gather_energy/rapl\nAcctGatherEnergyType=acct_gather_energy/none\n"));
        // Through an Include.
        let d = tmp("energy");
        write(
            &d,
            "acct.conf",
            "AcctGatherEnergyType=acct_gather_energy/rapl\n",
        );
        let s = write(&d, "slurm.conf", "ClusterName=c\nInclude acct.conf\n");
        assert_eq!(slurm_measures_energy_at(&s), Some(true));
        let s = write(&d, "slurm.conf", "ClusterName=c\n");
        assert_eq!(slurm_measures_energy_at(&s), Some(false));
        assert_eq!(slurm_measures_energy_at(&d.join("missing.conf")), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn gres_specs() {
        assert_eq!(parse_gres_spec("gpu:4"), [(None, 4)]);
        assert_eq!(
            parse_gres_spec("gpu:a100:2(S:0),mps:100,gpu:h100:1"),
            [(Some("a100".into()), 2), (Some("h100".into()), 1)]
        );
        assert_eq!(parse_gres_spec("gpu"), [(None, 1)]);
    }

    #[test]
    fn non_devices_are_rejected_and_skipped() {
        let d = tmp("dev");
        let plain = write(&d, "nvidia0", "");
        let g = write(
            &d,
            "gres.conf",
            &format!(
                "Name=gpu File={}\nName=gpu File=/dev/null\n",
                plain.display()
            ),
        );
        // The plain file is skipped: /dev/null (a char device) becomes index 0.
        let f = gpu_files(&g, None, "n1").unwrap();
        assert_eq!(names(&f), ["/dev/null"]);
        assert_eq!(minors_for(&[0], &g, None, "n1").unwrap(), [3]); // /dev/null is 1:3
        assert!(matches!(
            minors_for(&[1], &g, None, "n1"),
            Err(GresError::NoSuchIndex { index: 1, .. })
        ));
        assert!(matches!(device_minor(&plain), Err(GresError::NotDevice(_))));
        fs::remove_dir_all(&d).unwrap();
    }
}
