//! The record's tests: both forms, merges and what sacctmgr can store.

use super::*;
use crate::slurm::Differences;

fn meta(n: u32) -> Meta {
    Meta {
        intensity: GramsPerKwh(475.0),
        pue: 1.58,
        expected_nodes: n,
    }
}

fn part(node: &str, wh: f64) -> NodePart {
    NodePart::new(
        node,
        wh,
        2,
        part_co2e(wh, &meta(1)),
        Method::Counter,
        (1_700_000_000.0, 1_700_000_060.0),
    )
    .rounded()
}

/// A deterministic stream of pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Node `i` of a big job: 32-character names over 64 racks, 8 GPUs, about an hour
/// with a few seconds of jitter, flags and embodied emissions on every node.
fn big_part(i: usize, rng: &mut Lcg) -> NodePart {
    let node = format!("h100-cluster-east-rack{:02}-node{:03}", i / 64, i % 64 + 1);
    assert_eq!(node.len(), 32);
    let start = 1_800_000_000.0 + rng.next() * 3.0;
    let end = start + 3600.0 + rng.next() * 3.0;
    let wh = 5000.0 + rng.next() * 600.0;
    let flags = match i % 50 {
        0 => vec!["shared".into(), "reset".into()],
        n if n % 10 == 0 => vec!["shared".into(), "partial".into()],
        _ => vec!["shared".into()],
    };
    let method = if i % 97 == 0 {
        Method::Mixed
    } else {
        Method::Counter
    };
    NodePart {
        coverage: Some(0.99),
        flags,
        peak_w: Some(5600.0),
        intensity_src: Some("fixed".into()),
        embodied_g: Some(12.5 * 8.0 * (end - start) / 3600.0),
        ..NodePart::new(node, wh, 8, part_co2e(wh, &meta(1)), method, (start, end))
    }
    .rounded()
}

/// What the compact form promises to keep of `p` (see compact.rs).
fn assert_kept(kept: &NodePart, p: &NodePart) {
    assert_eq!(kept.node, p.node);
    assert_eq!(
        (kept.gpus, kept.method, &kept.flags, &kept.intensity_src),
        (p.gpus, p.method, &p.flags, &p.intensity_src)
    );
    let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * b.abs() + 5e-5;
    assert!(close(kept.wh, p.wh, 5e-6), "{kept:?} {p:?}");
    assert!(close(kept.co2e_g, p.co2e_g, 1e-5), "{kept:?} {p:?}");
    let (len, kept_len) = (p.end - p.start, kept.end - kept.start);
    assert!((len - kept_len).abs() <= 0.051, "{kept:?} {p:?}");
    let emb = (kept.embodied_g.unwrap(), p.embodied_g.unwrap());
    assert!(close(emb.0, emb.1, 0.06 / len + 5e-4), "{kept:?} {p:?}");
    assert_eq!((kept.coverage, kept.peak_w), (None, None));
}

#[test]
fn a_4096_node_job_fits_the_column_with_room_to_spare() {
    let mut rng = Lcg(7);
    let parts: Vec<NodePart> = (0..4096).map(|i| big_part(i, &mut rng)).collect();
    let m = meta(4096);
    let first = Segment {
        meta: m,
        parts: parts[..4095]
            .iter()
            .map(|p| (p.node.clone(), p.clone()))
            .collect(),
        compact: false,
    }
    .format();
    let before = parse(&first).unwrap();
    assert!(before.compact && before.parts.len() == 4095);
    let clock = std::time::Instant::now();
    let field = merge(&first, &parts[4095], &m, None);
    let took = clock.elapsed();
    let seg = parse(&field).unwrap();
    eprintln!(
        "4096 nodes, 32-char names: {} bytes ({} before the last merge), merge took {took:?}",
        field.len(),
        first.len()
    );
    assert!(field.len() <= 40 * 1024, "{} bytes", field.len());
    let foreign = "x".repeat(16 * 1024);
    assert_eq!(
        check_writable(&format!("{foreign} {field}"), &v22()),
        Ok(())
    );
    assert!(
        field.contains(" gpus=32768 nodes=4096 of=4096 "),
        "{}",
        &field[..200]
    );
    // Every node's share is there, as kept, and the 4,095 others did not move.
    assert_eq!(seg.parts.len(), 4096);
    for p in &parts {
        assert_kept(&seg.parts[&p.node], p);
    }
    for (node, p) in &before.parts {
        assert_eq!(&seg.parts[node], p);
    }
    // The total is the sum of the shares kept, exactly, and within the kept
    // precision of the nodes' own figures.
    let kept: f64 = seg.parts.values().map(|p| p.wh).sum();
    assert_eq!(seg.gpu_wh(), kept);
    let last = seg.parts[&parts[4095].node].wh;
    assert!((seg.gpu_wh() - before.gpu_wh() - last).abs() < 1e-6);
    let truth: f64 = parts.iter().map(|p| p.wh).sum();
    assert!(
        (seg.gpu_wh() - truth).abs() <= 5e-6 * truth,
        "{} {truth}",
        seg.gpu_wh()
    );
    assert!(field.contains(&format!(" gpu_wh={} ", num(kept, 4))));
    assert_eq!(seg.gpus(), 32768);
    // Delivering the last part again changes nothing; a new figure for it replaces
    // its share and nothing else.
    assert_eq!(merge(&field, &parts[4095], &m, None), field);
    let mut again = parts[4095].clone();
    again.wh += 100.0;
    let replaced = parse(&merge(&field, &again, &m, None)).unwrap();
    assert_eq!(replaced.parts.len(), 4096);
    let diff = replaced.gpu_wh() - seg.gpu_wh();
    assert!((diff - 100.0).abs() < 0.01, "{diff}");
}

#[test]
fn thirty_two_nodes_stay_readable_within_8_kib_and_33_go_compact() {
    let mut rng = Lcg(3);
    let parts: Vec<NodePart> = (0..33)
        .map(|i| {
            let mut p = big_part(i, &mut rng);
            p.flags = [
                "shared",
                "disagree",
                "reset",
                "partial",
                "missing",
                "samplerlost",
            ]
            .map(String::from)
            .to_vec();
            p
        })
        .collect();
    let record = |n: usize| {
        Segment {
            meta: meta(n as u32),
            parts: parts[..n]
                .iter()
                .map(|p| (p.node.clone(), p.clone()))
                .collect(),
            compact: false,
        }
        .format()
    };
    let full = record(32);
    assert!(
        full.contains(" node.") && !full.contains(" parts="),
        "{full}"
    );
    assert!(full.len() <= 8 * 1024, "{} bytes", full.len());
    let seg = parse(&full).unwrap();
    assert!(!seg.compact);
    assert_eq!(seg.parts.values().cloned().collect::<Vec<_>>(), parts[..32]);
    let compact = record(33);
    assert!(compact.contains(" parts=") && !compact.contains(" node."));
    assert!(compact.len() * 4 < full.len(), "{compact}");
    // The form follows the job's size from its first part on.
    let first = merge("", &parts[0], &meta(33), None);
    assert!(
        first.contains(" hostlist=h100-cluster-east-rack00-node001 "),
        "{first}"
    );
    assert_kept(&parse(&first).unwrap().parts[&parts[0].node], &parts[0]);
}

#[test]
fn compact_merges_are_idempotent_and_order_free() {
    let mut rng = Lcg(5);
    let parts: Vec<NodePart> = (0..40).map(|i| big_part(i * 3, &mut rng)).collect();
    let m = meta(40);
    let forward = parts
        .iter()
        .fold(String::new(), |f, p| merge(&f, p, &m, None));
    let backward = parts
        .iter()
        .rev()
        .fold("site=a".to_string(), |f, p| merge(&f, p, &m, None));
    assert_eq!(format!("site=a {forward}"), backward);
    for p in &parts {
        assert_eq!(merge(&forward, p, &m, None), forward);
    }
    let seg = parse(&forward).unwrap();
    assert!(seg.compact);
    for p in &parts {
        assert_kept(&seg.parts[&p.node], p);
    }
    // What a reader gets back is what a writer keeps: formatting it again is the
    // same text.
    assert_eq!(seg.format(), forward);
    // Nodes outside the job's list are dropped, as in the full form.
    let allowed: Vec<String> = parts[..39].iter().map(|p| p.node.clone()).collect();
    let filtered = parse(&merge(&forward, &parts[0], &m, Some(&allowed))).unwrap();
    assert_eq!(filtered.parts.len(), 39);
    assert!(!filtered.parts.contains_key(&parts[39].node));
}

#[test]
fn hostile_compact_records_are_dropped_not_fatal() {
    let good = {
        let mut rng = Lcg(9);
        let parts: Vec<NodePart> = (0..34).map(|i| big_part(i, &mut rng)).collect();
        parts
            .iter()
            .fold(String::new(), |f, p| merge(&f, p, &meta(34), None))
    };
    assert_eq!(parse(&good).unwrap().parts.len(), 34);
    let replace = |from: &str, to: &str| {
        let i = good.find(from).unwrap();
        let end = good[i..].find(' ').map_or(good.len(), |j| i + j);
        format!("{}{to}{}", &good[..i], &good[end..])
    };
    for (bad, left) in [
        (replace("hostlist=", "hostlist=n[1-999999]"), 0),
        (replace("hostlist=", "hostlist=n[1-33]"), 0),
        (replace("window=", "window=9-1"), 0),
        (replace("part-defaults=", "part-defaults=g8:mcounter"), 0),
        (
            replace("part-defaults=", "part-defaults=wz:g8:mcounter:f:s:e:c00"),
            0,
        ),
        (replace("parts=", "parts=zzzz"), 0),
    ] {
        let seg = parse(&bad).unwrap();
        assert_eq!(seg.parts.len(), left, "{bad}");
        // Merging into it replaces the broken detail and keeps the rest.
        let merged = merge(
            &format!("keep {bad} tail"),
            &part("n1", 1.0),
            &meta(1),
            None,
        );
        assert!(merged.starts_with("keep spank-carbon/1 ") && merged.ends_with(" tail"));
    }
    // A bad entry drops its node only.
    let i = good.find("parts=").unwrap() + "parts=".len();
    let broken_entry = format!(
        "{}zz:gx{}",
        &good[..i],
        &good[i + good[i..].find(',').unwrap()..]
    );
    assert_eq!(
        parse(&broken_entry).unwrap().parts.len(),
        33,
        "{broken_entry}"
    );
}

#[test]
fn a_big_job_without_parts_writes_no_detail() {
    let empty = Segment {
        meta: meta(100),
        parts: BTreeMap::new(),
        compact: false,
    }
    .format();
    assert!(
        !empty.contains("hostlist") && !empty.contains("node."),
        "{empty}"
    );
    assert_eq!(find(&empty).unwrap().end, empty.len());
}

#[test]
fn gpu_counts_that_overflow_make_no_record() {
    let forged = "spank-carbon/1 gpu_wh=2 node.a=wh:1,co2e:1,gpus:4294967295,m:counter,t:1-2 \
                  node.b=wh:1,co2e:1,gpus:1,m:counter,t:1-2";
    assert!(find(forged).unwrap().counts_overflow);
    assert_eq!(parse(forged), None);
    let merged = merge(forged, &part("c", 1.0), &meta(3), None);
    let seg = parse(&merged).unwrap();
    assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["c"]);
    // Forged parts that overflow only with this node's are dropped too.
    let near = "spank-carbon/1 gpu_wh=1 node.a=wh:1,co2e:1,gpus:4294967295,m:counter,t:1-2";
    let seg = parse(&merge(near, &part("c", 1.0), &meta(2), None)).unwrap();
    assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(seg.gpus(), 2);
}

#[test]
fn average_power_never_shows_above_the_peak() {
    // A constant load: its average (energy over the kept window) is its peak, and
    // the report shows both to 0.1 W. With windows to 0.1 s a 10 s job showed
    // 552.3 W on average against 550 W peak.
    let mut rng = Lcg(11);
    for _ in 0..5000 {
        let watts = 50.0 + (rng.next() * 6e6).round() / 1000.0;
        let start = 1.8e9 + (rng.next() * 1e8).round() / 1000.0 + rng.next() * 1e-3;
        let seconds = 10.0 + rng.next() * 100.0;
        let p = NodePart {
            wh: watts * seconds / 3600.0,
            start,
            end: start + seconds,
            peak_w: Some(watts),
            ..part("n1", 0.0)
        }
        .rounded();
        let back = parse(&merge("", &p, &meta(1), None)).unwrap().parts["n1"].clone();
        assert_eq!(back, p);
        let avg = back.wh * 3600.0 / (back.end - back.start);
        let peak = back.peak_w.unwrap();
        // Only the energy's 0.1 mWh rounding can lift the average above the peak.
        assert!(
            avg <= peak + 0.00005 * 3600.0 / seconds,
            "{avg} {peak} {p:?}"
        );
        let shown = |w: f64| num(w, 1).parse::<f64>().unwrap();
        assert!(shown(avg) <= shown(peak), "{avg} {peak} {p:?}");
    }
}

#[test]
fn compact_numbers_keep_their_precision() {
    let mut rng = Lcg(13);
    for _ in 0..20_000 {
        let x = 10f64.powf(rng.next() * 19.0 - 4.0);
        let code = compact::enc(x, 6, -4);
        let back = compact::dec(&code).unwrap();
        assert!((back - x).abs() <= 5e-6 * x + 5e-5, "{x} {code} {back}");
        assert_eq!(compact::enc(back, 6, -4), code, "{x}");
        let code = compact::enc(x, 4, -12);
        let back = compact::dec(&code).unwrap();
        assert!((back - x).abs() <= 5e-4 * x, "{x} {code} {back}");
        assert_eq!(compact::enc(back, 4, -12), code, "{x}");
    }
    assert_eq!(compact::dec(&compact::enc(0.0, 6, -4)), Some(0.0));
    assert_eq!(compact::dec(&compact::enc(f64::NAN, 6, -4)), Some(0.0));
    for bad in ["", "a", "A1", "z!", "0zzzzzzzzzzzz"] {
        assert_eq!(compact::dec(bad), None, "{bad}");
    }
    let big = 36u64.pow(12) - 1;
    assert_eq!(compact::parse36(&compact::base36(big)), Some(big));
    assert_eq!(compact::parse36(&compact::base36(big + 1)), None);
}

#[test]
fn format_has_the_promised_prefix() {
    let f = merge("", &part("node1", 12.3456), &meta(1), None);
    assert!(
        f.starts_with("spank-carbon/1 gpu_wh=12.3456 co2e_g=9.2654 intensity=475 pue=1.58 gpus=2 nodes=1 of=1 method=counter node.node1=wh:12.3456,gpus:2,co2e:9.2654,m:counter,t:1700000000-1700000060"),
        "{f}"
    );
    assert_eq!(f, f.to_lowercase());
    assert!(check_writable(&f, &v22()).is_ok());
}

#[test]
fn shared_boards_say_their_rule_in_both_forms() {
    let mut p = part("n1", 1.5);
    p.flags = vec!["estimate".into(), "shared".into()];
    p.share = Some(ShareRule {
        rule: "mig-sm".into(),
        gpus: 0.10612,
    });
    let p = p.rounded();
    let field = merge("", &p, &meta(1), None);
    assert!(field.contains(",sh:mig-sm_0.1061"), "{field}");
    let back = parse(&field).unwrap().parts["n1"].clone();
    assert_eq!(back.share, p.share);
    assert_eq!(back, p);
    // The compact form keeps it as an `h` field; a part without one keeps none.
    let mut other = part("n2", 2.0);
    other.share = None;
    let big = Meta {
        expected_nodes: COMPACT_ABOVE_NODES + 1,
        ..meta(1)
    };
    let field = merge(&merge("", &p, &big, None), &other, &big, None);
    let seg = parse(&field).unwrap();
    assert!(seg.compact, "{field}");
    assert!(field.contains(":hmig-sm_0.1061"), "{field}");
    assert_eq!(seg.parts["n1"].share, p.share);
    assert_eq!(seg.parts["n2"].share, None);
    // A compact record written before `h` existed still reads.
    let old = field.replace(":hmig-sm_0.1061", "").replace(":h ", " ");
    let seg = parse(&old).unwrap_or_else(|| panic!("{old}"));
    assert_eq!(seg.parts.len(), 2);
    assert_eq!(seg.parts["n1"].share, None);
    // Bad rules are dropped, not fatal to the part.
    assert!(ShareRule::parse("MIG_1").is_none());
    assert!(ShareRule::parse("-x_1").is_none());
    assert!(ShareRule::parse("mps_-1").is_none());
    assert_eq!(
        ShareRule::parse("mps_0.25"),
        Some(ShareRule {
            rule: "mps".into(),
            gpus: 0.25
        })
    );
}

#[test]
fn round_trip() {
    let mut p = part("gpu-07", 1.5);
    p.coverage = Some(0.987);
    p.flags = vec!["shared".into(), "reset".into()];
    p.method = Method::Sampled;
    let f = merge("", &p, &meta(3), None);
    let seg = parse(&f).unwrap();
    assert_eq!(seg.parts["gpu-07"], p);
    assert_eq!(seg.meta.expected_nodes, 3);
    assert_eq!(seg.meta.pue, 1.58);
}

#[test]
fn merge_keeps_other_nodes_and_sums() {
    let a = merge("", &part("node1", 1.0), &meta(3), None);
    let b = merge(&a, &part("node2", 2.0), &meta(3), None);
    let c = merge(&b, &part("node3", 3.5), &meta(3), None);
    let seg = parse(&c).unwrap();
    assert_eq!(seg.parts.len(), 3);
    assert_eq!(seg.gpu_wh(), 6.5);
    assert!(c.contains(" gpu_wh=6.5 "), "{c}");
    assert!(c.contains(" nodes=3 of=3 "), "{c}");
    assert!(c.contains(" gpus=6 "), "{c}");
    // Replacing a node's part does not double count.
    let d = merge(&c, &part("node2", 2.25), &meta(3), None);
    assert_eq!(parse(&d).unwrap().gpu_wh(), 6.75);
    // Merging the same part twice changes nothing (idempotent delivery).
    assert_eq!(merge(&d, &part("node2", 2.25), &meta(3), None), d);
}

#[test]
fn foreign_text_is_kept_byte_for_byte() {
    for foreign in [
        "site-tag=abc",
        "Quota: 5%  ",
        "x",
        "ends with space ",
        "ünïcode ✓",
    ] {
        let f = merge(foreign, &part("node1", 1.0), &meta(1), None);
        assert!(f.starts_with(foreign), "{f}");
        let f2 = merge(&f, &part("node2", 1.0), &meta(2), None);
        assert!(f2.starts_with(foreign));
        let found = find(&f2).unwrap();
        assert_eq!(&f2[..found.start], format!("{foreign} "));
    }
    // Text after the segment stays too.
    let seg = merge("", &part("node1", 1.0), &meta(1), None);
    let field = format!("before {seg} after=tail more");
    let merged = merge(&field, &part("node2", 2.0), &meta(2), None);
    assert!(merged.starts_with("before spank-carbon/1 "));
    assert!(merged.ends_with(" after=tail more"), "{merged}");
}

#[test]
fn marker_inside_a_word_is_not_a_record() {
    assert!(find("xspank-carbon/1 gpu_wh=1").is_none());
    assert!(find("spank-carbon/10 gpu_wh=1").is_none());
    let f = merge("see spank-carbon/1x", &part("n1", 1.0), &meta(1), None);
    assert!(f.starts_with("see spank-carbon/1x spank-carbon/1 "), "{f}");
}

#[test]
fn corrupted_parts_are_dropped_not_fatal() {
    let field = "spank-carbon/1 gpu_wh=zz node.n1=wh:abc,m:counter node.n2=wh:1,co2e:0.5,gpus:1,m:counter,t:1-2 node.n3=garbage";
    let found = find(field).unwrap();
    assert_eq!(found.parts.keys().collect::<Vec<_>>(), ["n2"]);
    // The corrupted segment is replaced whole: totals recomputed from the parts that
    // parsed, the broken tokens gone, nothing else touched.
    let merged = merge(
        &format!("keep {field} tail"),
        &part("n4", 1.0),
        &meta(2),
        None,
    );
    assert!(
        merged.starts_with("keep spank-carbon/1 gpu_wh=2 "),
        "{merged}"
    );
    assert!(merged.ends_with(" tail"), "{merged}");
    assert!(
        !merged.contains("zz") && !merged.contains("garbage"),
        "{merged}"
    );
}

#[test]
fn allowed_nodes_filter_forged_parts() {
    let forged = "spank-carbon/1 gpu_wh=0 node.evil=wh:0,co2e:0,gpus:9,m:counter,t:1-2";
    let allowed = vec!["node1".to_string(), "node2".to_string()];
    let merged = merge(forged, &part("node1", 2.0), &meta(2), Some(&allowed));
    let seg = parse(&merged).unwrap();
    assert_eq!(seg.parts.keys().collect::<Vec<_>>(), ["node1"]);
}

#[test]
fn first_writers_meta_is_kept() {
    let a = merge("", &part("n1", 1.0), &meta(2), None);
    let other = Meta {
        intensity: GramsPerKwh(100.0),
        pue: 1.1,
        expected_nodes: 2,
    };
    let b = merge(&a, &part("n2", 1.0), &other, None);
    assert!(b.contains(" intensity=475 pue=1.58 "), "{b}");
    assert_eq!(merge(&b, &part("n2", 1.0), &other, None), b);
}

#[test]
fn writability() {
    assert_eq!(check_writable("Site", &v22()), Err(Unwritable::UpperCase));
    assert!(check_writable("Site", &v24()).is_ok());
    assert_eq!(check_writable("it's", &v24()), Err(Unwritable::Quote));
    assert_eq!(check_writable("a\\b", &v24()), Err(Unwritable::Quote));
    assert_eq!(check_writable("a\u{7}b", &v24()), Err(Unwritable::Control));
    assert!(check_writable("a\nb", &v24()).is_ok());
    assert!(check_writable("Ünïcode", &v22()).is_ok());
    assert_eq!(check_writable("=x", &v24()), Err(Unwritable::Quote));
    assert_eq!(
        check_writable(&"x".repeat(70_000), &v24()),
        Err(Unwritable::TooLong)
    );
    assert!(check_writable("quota: 5% ok", &v22()).is_ok());
}

/// The SLUID token round-trips through parse, in both forms, stays the segment's last
/// token, is kept by later merges without one, and is writable on 25.11+.
#[test]
fn sluid_token() {
    let upper = "s0123456789ABC";
    let lower = "s0123456789abc";
    for n in [1u32, COMPACT_ABOVE_NODES + 2] {
        let nodes: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let m = meta(n);
        let mut f = String::from("site");
        for (i, node) in nodes.iter().enumerate() {
            // Only the first node knows it: the others keep it.
            let sl = (i == 0).then_some(upper);
            f = merge_in_run_sluid(&f, &part(node, 1.0), &m, Some(&nodes), 7, sl);
        }
        let found = find_run(&f, 7).unwrap();
        assert_eq!(found.sluid.as_deref(), Some(lower));
        assert_eq!(found.parts.len(), n as usize);
        assert_eq!(found.compact, n > COMPACT_ABOVE_NODES);
        assert!(f.ends_with(&format!(" sluid={lower}")), "{f}");
        assert_eq!(f.matches("sluid=").count(), 1);
        assert!(check_writable(&f, &v26()).is_ok());
        // A record without it reads the same otherwise.
        let plain = f.replace(&format!(" sluid={lower}"), "");
        assert_eq!(parse(&plain).unwrap(), parse(&f).unwrap());
        assert_eq!(find_run(&plain, 7).unwrap().sluid, None);
        // Text after the segment stays foreign.
        let more = format!("{f} tail");
        assert_eq!(find_run(&more, 7).unwrap().end, f.len());
    }
    // Not a SLUID: not written, not read.
    let f = merge_in_run_sluid(
        "",
        &part("n1", 1.0),
        &meta(1),
        None,
        7,
        Some("s0123456789ABI"),
    );
    assert!(!f.contains("sluid"), "{f}");
    let forged = format!("{f} sluid=sg123456789abc");
    assert_eq!(find_run(&forged, 7).unwrap().sluid, None);
}

fn v22() -> Differences {
    Differences::for_version(crate::slurm::SlurmVersion::new(22, 5, 8))
}

fn v24() -> Differences {
    Differences::for_version(crate::slurm::SlurmVersion::new(24, 11, 5))
}

fn v26() -> Differences {
    Differences::for_version(crate::slurm::SlurmVersion::new(26, 5, 3))
}

/// 25.05+ trims the value's ends: other writers' text that starts or ends with
/// whitespace would be changed by our rewrite, so it is refused there and only there.
#[test]
fn whitespace_at_either_end_is_refused_from_25_05() {
    let ours = merge("", &part("n1", 1.0), &meta(1), None);
    let tail = format!("{ours} tail ");
    for foreign in ["  lead", "\tlead", "\nlead", tail.as_str()] {
        let merged = merge(foreign, &part("n1", 2.0), &meta(1), None);
        let ends_with_space =
            merged.starts_with(char::is_whitespace) || merged.ends_with(char::is_whitespace);
        assert!(ends_with_space, "{merged:?}");
        assert_eq!(check_writable(&merged, &v26()), Err(Unwritable::Whitespace));
        assert!(check_writable(&merged, &v24()).is_ok(), "{merged:?}");
        assert!(check_writable(&merged, &v22()).is_ok(), "{merged:?}");
    }
    // Inner whitespace, and a field that is only our segment, are fine everywhere.
    for v in [v22(), v24(), v26()] {
        assert!(check_writable(&ours, &v).is_ok());
        assert!(check_writable(&format!("a  b {ours}"), &v).is_ok());
    }
    assert!(Unwritable::Whitespace.to_string().contains("trim"));
}

#[test]
fn numbers_format_plainly() {
    assert_eq!(num(475.0, 3), "475");
    assert_eq!(num(1.58, 3), "1.58");
    assert_eq!(num(0.00004, 4), "0");
    assert_eq!(num(-0.00001, 4), "0");
    assert_eq!(num(12.34566, 4), "12.3457");
}
