//! Property tests (fuzzing) of the parsers that read outside input: the comment field
//! and its merge, configuration, state and pending files, host lists, SLURM_JOB_GPUS,
//! sacct output. A short run is part of the test suite (256 cases each); scripts/bench.sh
//! runs a long one (PROPTEST_CASES=20000).

use proptest::prelude::*;

use spank_carbon::accounting::{parse_sacct_rows, Delivery};
use spank_carbon::core::config::Config;
use spank_carbon::node::sampler::SamplerState;
use spank_carbon::record::{self, Meta, Method, NodePart, MARKER};
use spank_carbon::units::GramsPerKwh;

fn meta() -> Meta {
    Meta {
        intensity: GramsPerKwh(475.0),
        pue: 1.58,
        expected_nodes: 4,
    }
}

prop_compose! {
    fn a_part()(node in "[a-z][a-z0-9-]{0,8}", wh in 0.0f64..1e6, gpus in 0u32..64,
                start in 0u64..2_000_000_000, len in 0u64..1_000_000, tenth in 0u64..10,
                method in prop_oneof![Just(Method::Counter), Just(Method::Sampled), Just(Method::Mixed)],
                cov in proptest::option::of(0.0f64..1.0),
                flags in proptest::collection::vec("[a-z]{1,10}", 0..3),
                share in a_share()) -> NodePart {
        let window = (start as f64 + tenth as f64 / 10.0, (start + len) as f64);
        NodePart {
            coverage: cov,
            flags,
            intensity_src: Some("fixed".into()),
            share,
            ..NodePart::new(node, wh, gpus, wh * 0.75, method, window)
        }
        .rounded()
    }
}

fn a_share() -> impl Strategy<Value = Option<record::ShareRule>> {
    proptest::option::of(
        (
            prop_oneof![Just("mig-sm"), Just("mps"), Just("shard"), Just("mixed")],
            0.0f64..64.0,
        )
            .prop_map(|(rule, gpus)| record::ShareRule {
                rule: rule.to_string(),
                gpus,
            }),
    )
}

prop_compose! {
    /// A part of a big job: names from a few host-list patterns, any window and figures.
    fn a_big_part()(prefix in prop_oneof![Just("gpu"), Just("node-a"), Just("r1n"), Just("x")],
                    number in 0u32..200, pad in 0usize..5, suffix in prop_oneof![Just(""), Just("-ib")],
                    wh in prop_oneof![0.0f64..1.0, 0.0f64..1e4, 0.0f64..1e9],
                    factor in prop_oneof![Just(0.7505), 0.0f64..3.0],
                    gpus in 0u32..16, start in 0u64..2_000_000_000, milli in 0u64..1000,
                    len in prop_oneof![0.0f64..100.0, 0.0f64..1e7],
                    method in prop_oneof![Just(Method::Counter), Just(Method::Sampled), Just(Method::Mixed)],
                    flags in proptest::collection::vec("[a-z]{1,8}", 0..3),
                    src in proptest::option::of("[a-z]{1,8}"),
                    emb in proptest::option::of(prop_oneof![Just(12.5), 0.0f64..100.0]),
                    share in a_share()) -> NodePart {
        let start = start as f64 + milli as f64 / 1000.0;
        let node = format!("{prefix}{number:0pad$}{suffix}");
        NodePart {
            coverage: Some(0.5),
            flags,
            peak_w: Some(100.0),
            intensity_src: src,
            embodied_g: emb.map(|rate| rate * gpus as f64 * len / 3600.0),
            share,
            ..NodePart::new(node, wh, gpus, wh * factor, method, (start, start + len))
        }
        .rounded()
    }
}

fn big_meta(n: usize) -> Meta {
    Meta {
        expected_nodes: (n as u32).max(record::COMPACT_ABOVE_NODES + 1),
        ..meta()
    }
}

/// What the compact form promises to keep of `p` (see the record module's docs).
fn kept(back: &NodePart, p: &NodePart, job_end: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(&back.node, &p.node);
    let flags: Vec<&String> = p.flags.iter().collect();
    prop_assert_eq!(
        (
            back.gpus,
            back.method,
            back.flags.iter().collect::<Vec<_>>(),
            &back.intensity_src
        ),
        (p.gpus, p.method, flags, &p.intensity_src)
    );
    let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * b.abs() + 5e-5;
    prop_assert!(close(back.wh, p.wh, 5e-6), "wh {} {}", back.wh, p.wh);
    if back.wh > 0.0 {
        prop_assert!(
            close(back.co2e_g, p.co2e_g, 2e-5),
            "co2e {} {}",
            back.co2e_g,
            p.co2e_g
        );
    }
    let len = p.end - p.start;
    prop_assert!(((back.end - back.start) - len).abs() <= 0.051);
    prop_assert_eq!(back.end, job_end);
    prop_assert_eq!(back.embodied_g.is_some(), p.embodied_g.is_some());
    prop_assert_eq!((back.coverage, back.peak_w), (None, None));
    prop_assert_eq!(&back.share, &p.share);
    Ok(())
}

fn a_fixed_part() -> NodePart {
    NodePart::new("gpu1", 1.0, 1, 0.75, Method::Counter, (1.0, 2.0))
}

/// Foreign text: anything at all, including text that looks almost like a record.
fn foreign() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        "[ -~]{0,200}",
        "(spank-carbon/[0-9x]|gpu_wh=|node\\.|=| |[a-z]){0,40}",
    ]
}

proptest! {
    #[test]
    fn parsers_never_panic_on_any_field(s in ".{0,500}") {
        let _ = record::find(&s);
        let _ = record::parse(&s);
        for v in [(22, 5), (24, 11), (26, 5)] {
            let d = spank_carbon::slurm::Differences::for_version(
                spank_carbon::slurm::SlurmVersion::new(v.0, v.1, 0),
            );
            let _ = record::check_writable(&s, &d);
        }
    }

    #[test]
    fn merge_keeps_foreign_text_and_adds_the_part(f in foreign(), p in a_part()) {
        let merged = record::merge(&f, &p, &meta(), None);
        let seg = record::parse(&merged).expect("a record after the merge");
        prop_assert_eq!(seg.parts.get(&p.node), Some(&p));
        if !f.contains(MARKER) {
            let expect = if f.is_empty() { String::new() } else { format!("{f} ") };
            prop_assert!(merged.starts_with(&expect));
            prop_assert_eq!(record::find(&merged).unwrap().start, expect.len());
        }
    }

    #[test]
    fn merge_is_idempotent(f in foreign(), p in a_part()) {
        let once = record::merge(&f, &p, &meta(), None);
        let twice = record::merge(&once, &p, &meta(), None);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn merge_order_does_not_matter(f in "[ -~]{0,60}", a in a_part(), b in a_part()) {
        prop_assume!(a.node != b.node && !f.contains(MARKER));
        let ab = record::merge(&record::merge(&f, &a, &meta(), None), &b, &meta(), None);
        let ba = record::merge(&record::merge(&f, &b, &meta(), None), &a, &meta(), None);
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn text_around_a_record_survives_merges(prefix in "[ -~]{0,80}", suffix in "( [A-Z!#][ -~]{0,40})?",
                                            a in a_part(), b in a_part()) {
        prop_assume!(!prefix.contains(MARKER) && !suffix.contains(MARKER));
        // A record is a token of its own: foreign text before it ends in whitespace.
        let prefix = if prefix.is_empty() { prefix } else { format!("{prefix} ") };
        let field = format!("{prefix}{}{suffix}", record::merge("", &a, &meta(), None));
        let merged = record::merge(&field, &b, &meta(), None);
        prop_assert!(merged.starts_with(&prefix));
        prop_assert!(merged.ends_with(&suffix));
        let seg = record::parse(&merged).unwrap();
        prop_assert!(seg.parts.contains_key(&a.node) && seg.parts.contains_key(&b.node));
        let total: f64 = seg.parts.values().map(|p| p.wh).sum();
        prop_assert!((seg.gpu_wh() - total).abs() < 1e-6);
    }

    #[test]
    fn compact_records_round_trip(f in "[ -~]{0,60}",
                                  parts in proptest::collection::vec(a_big_part(), 1..48)) {
        prop_assume!(!f.contains(MARKER));
        let mut unique = std::collections::BTreeMap::new();
        for p in parts {
            unique.insert(p.node.clone(), p);
        }
        let parts: Vec<NodePart> = unique.into_values().collect();
        let m = big_meta(parts.len());
        let field = parts.iter().fold(f.clone(), |acc, p| record::merge(&acc, p, &m, None));
        let seg = record::parse(&field).expect("a record");
        prop_assert!(seg.compact);
        prop_assert_eq!(seg.parts.len(), parts.len());
        let job_end = seg.parts.values().map(|p| p.end).fold(0.0, f64::max);
        for p in &parts {
            kept(&seg.parts[&p.node], p, job_end)?;
        }
        // The text around it stays, a reader's parts format to the same text, every
        // merge again is a no-op, and the order of the merges does not matter.
        let prefix = if f.is_empty() { f.clone() } else { format!("{f} ") };
        prop_assert!(field.starts_with(&prefix));
        prop_assert_eq!(&field[prefix.len()..], seg.format());
        for p in &parts {
            prop_assert_eq!(&record::merge(&field, p, &m, None), &field);
        }
        let reversed = parts.iter().rev().fold(f, |acc, p| record::merge(&acc, p, &m, None));
        prop_assert_eq!(reversed, field.clone());
        // Totals are the sum of the kept parts.
        let total: f64 = seg.parts.values().map(|p| p.wh).sum();
        let token = format!(" gpu_wh={} ", record::num(total, 4));
        prop_assert!(field.contains(&token));
    }

    #[test]
    fn compact_parser_never_panics(window in "[0-9.-]{0,24}", hosts in "[a-z0-9\\[\\],-]{0,30}",
                                   defaults in "[a-z0-9:+]{0,40}", entries in "[a-z0-9:.+,]{0,80}") {
        let field = format!("{MARKER} gpu_wh=1 window={window} hostlist={hosts} part-defaults={defaults} parts={entries}");
        if let Some(seg) = record::parse(&field) {
            let _ = seg.format();
            let _ = seg.gpus();
        }
        let _ = record::merge(&field, &a_fixed_part(), &big_meta(40), None);
    }

    #[test]
    fn compact_parser_never_panics_on_mutated_records(parts in proptest::collection::vec(a_big_part(), 1..10),
                                                      at in any::<proptest::sample::Index>(),
                                                      junk in "[ -~]{0,6}") {
        let m = big_meta(parts.len());
        let field = parts.iter().fold(String::new(), |acc, p| record::merge(&acc, p, &m, None));
        let mut cut = at.index(field.len() + 1);
        while !field.is_char_boundary(cut) {
            cut -= 1;
        }
        let mutated = format!("{}{junk}{}", &field[..cut], &field[(cut + junk.len()).min(field.len())..]);
        let _ = record::parse(&mutated);
        let merged = record::merge(&mutated, &parts[0], &m, None);
        prop_assert!(record::parse(&merged).is_some_and(|s| s.parts.contains_key(&parts[0].node)));
    }

    #[test]
    fn hostlists_compress_and_expand_back(names in proptest::collection::vec(
            "(gpu|node-|r[0-9]n|x|a0)[0-9]{0,4}(-ib)?", 0..60), sort in any::<bool>()) {
        let mut names = names;
        if sort {
            // A job's node list: sorted, and each node once (the length bound below
            // does not hold for repeated names: "a[0,0]" is longer than "a0,a0").
            names.sort_by(|a, b| spank_carbon::slurm::hostlist::natural_cmp(a, b));
            names.dedup();
        }
        let list = spank_carbon::slurm::hostlist::compress(&names).expect("plain names");
        prop_assert_eq!(spank_carbon::slurm::hostlist::expand(&list).unwrap(), names.clone());
        if sort && !names.is_empty() {
            prop_assert!(list.len() <= names.iter().map(|n| n.len() + 1).sum::<usize>());
        }
    }

    #[test]
    fn configuration_never_panics(args in proptest::collection::vec(".{0,40}", 0..6)) {
        if let Err(e) = Config::from_args(&args) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn toml_never_panics(text in ".{0,200}") {
        let _ = Config::default().apply_toml(&text);
    }

    #[test]
    fn state_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_json::from_slice::<SamplerState>(&bytes);
        let _ = serde_json::from_slice::<Delivery>(&bytes);
    }

    #[test]
    fn hostlists_and_gpu_lists_never_panic(s in "[a-z0-9\\[\\],-]{0,40}") {
        let _ = spank_carbon::slurm::hostlist::expand(&s);
        let _ = spank_carbon::slurm::gres::parse_indices(&s);
    }

    #[test]
    fn sacct_output_never_panics(job in 1u32..1000, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_sacct_rows(&[job], &bytes, "|");
        let _ = parse_sacct_rows(&[job], &bytes, "#sc0123");
    }

    /// Whatever a user writes into a field, with any guess of the delimiter but the real
    /// one, sacct's output for one row is still one row with that text as its field.
    #[test]
    fn field_text_never_forges_a_row(text in "[ -~\n]{0,200}") {
        let delim = spank_carbon::slurm::sacct_rows::nonce().unwrap();
        prop_assume!(!text.contains(&delim));
        let out = format!("7{d}7{d}COMPLETED{d}10{d}11{d}20{d}0{d}{text}\n", d = delim);
        let rows = parse_sacct_rows(&[7], out.as_bytes(), &delim).unwrap();
        let runs = &rows[&7].as_ref().unwrap().runs;
        prop_assert_eq!(runs.len(), 1);
        prop_assert_eq!(&runs[0].value, &text);
    }
}

#[test]
fn corrupted_json_state_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("sc-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("sampler.json");
    std::fs::write(&p, b"{\"job\": 1, \"gpus\": [").unwrap();
    assert!(spank_carbon::node::state::read_json::<SamplerState>(&p).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- sacct rows framed by a per-call delimiter (src/sacct_rows.rs) ---------------------

use spank_carbon::core::report;
use spank_carbon::slurm::sacct_rows::{split_rows, stream_rows};

/// Text a user can put in a field without knowing the delimiter: anything, fake rows in
/// the default format, newlines, and guesses at the delimiter (its prefix, one character
/// changed, another nonce).
fn hostile(delim: String) -> impl Strategy<Value = String> {
    let near = {
        let d = delim.clone();
        (1..d.len(), any::<u8>()).prop_map(move |(i, c)| {
            let mut g = d.clone().into_bytes();
            g[i] =
                b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[c as usize % 62];
            String::from_utf8(g).unwrap()
        })
    };
    let prefix = {
        let d = delim.clone();
        (0..d.len()).prop_map(move |i| d[..i].to_string())
    };
    let piece = prop_oneof![
        ".{0,40}",
        "[0-9]{1,6}\\|[a-z]{1,8}\\|[a-z]{1,8}\\|gpu\\|COMPLETED\\|[0-9]{1,5}\\|gres/gpu=8\\|n1\\|spank-carbon/1 co2e_g=1e9",
        Just("\n".to_string()),
        Just("|".to_string()),
        "\\|[a-zA-Z0-9]{20}",
        near,
        prefix,
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// `field` with every occurrence of `delim` broken (its first byte dropped, until none is
/// left): the nonce is unknown to users, so no field holds it, and the case stays as
/// hostile as it was drawn instead of being rejected (a long fuzz run rejected too many).
fn without(field: String, delim: &str) -> String {
    let mut f = field;
    while f.contains(delim) {
        f = f.replacen(delim, &delim[1..], 1);
    }
    f
}

fn a_table() -> impl Strategy<Value = (String, Vec<Vec<String>>)> {
    "\\|[a-zA-Z0-9]{20}".prop_flat_map(|delim| {
        let d = delim.clone();
        let row = (
            "[1-9][0-9]{0,9}",
            proptest::collection::vec(hostile(delim.clone()), 2),
            hostile(delim.clone()),
        )
            .prop_map(move |(id, mid, last)| {
                let mut r = vec![id];
                r.extend(mid.into_iter().map(|f| without(f, &d)));
                r.push(without(last, &d));
                r
            });
        (Just(delim), proptest::collection::vec(row, 0..6))
    })
}

proptest! {
    #[test]
    fn no_field_text_makes_or_loses_a_row((delim, rows) in a_table()) {
        // The nonce is unknown to users: no field holds it (`without`).
        prop_assert!(rows.iter().flatten().all(|f| !f.contains(&delim)));
        let text: String = rows.iter().map(|r| format!("{}\n", r.join(&delim))).collect();
        let split = split_rows(&text, &delim, 4).unwrap();
        prop_assert_eq!(&split, &rows);
        let mut streamed: Vec<Vec<String>> = Vec::new();
        let n = stream_rows(text.as_bytes(), &delim, 4, |r| {
            streamed.push(r.iter().map(|s| s.to_string()).collect());
            Ok(())
        })
        .unwrap();
        prop_assert_eq!(n, rows.len());
        prop_assert_eq!(&streamed, &rows);
    }

    #[test]
    fn a_report_counts_exactly_the_jobs_sacct_printed(
        (delim, comments) in "\\|[a-zA-Z0-9]{20}".prop_flat_map(|d| {
            (Just(d.clone()), proptest::collection::vec(hostile(d), 1..5))
        })
    ) {
        prop_assume!(comments.iter().all(|c| !c.contains(&delim)));
        let text: String = comments
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cols = [&(i + 1).to_string(), "u", "acct", "gpu", "COMPLETED", "3600",
                            "gres/gpu=1", "n1", c.as_str()];
                format!("{}\n", cols.join(&delim))
            })
            .collect();
        let t = report::totals(text.as_bytes(), &delim, report::GroupBy::Account).unwrap();
        prop_assert_eq!(t.len(), 1);
        prop_assert_eq!(t[0].jobs, comments.len() as u64);
        prop_assert!((t[0].gpu_hours - comments.len() as f64).abs() < 1e-9);
    }

    #[test]
    fn any_output_is_rows_or_an_error_never_a_panic(
        bytes in proptest::collection::vec(prop_oneof![Just(b'|'), Just(b'\n'), Just(b'A'), any::<u8>()], 0..300),
        ncols in 0usize..5,
    ) {
        let delim = "|A";
        let mut streamed = Vec::new();
        let s = stream_rows(&bytes[..], delim, ncols, |r| {
            streamed.push(r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            Ok(())
        });
        if let Ok(text) = std::str::from_utf8(&bytes) {
            // Both readers agree on valid UTF-8.
            match split_rows(text, delim, ncols) {
                Ok(rows) => {
                    prop_assert_eq!(s.unwrap(), rows.len());
                    prop_assert_eq!(streamed, rows);
                }
                Err(_) => prop_assert!(s.is_err()),
            }
        }
    }
}

/// Boards of a fake host: distinct minors and UUIDs, some in MIG mode with instances.
fn some_boards() -> impl Strategy<Value = Vec<spank_carbon::gpu::BoardInfo>> {
    proptest::collection::vec(
        (
            0u32..16,
            any::<bool>(),
            proptest::option::of(1u32..200),
            0usize..4,
        ),
        1..8,
    )
    .prop_map(|raw| {
        let mut seen = std::collections::BTreeSet::new();
        raw.into_iter()
            .filter(|(minor, ..)| seen.insert(*minor))
            .enumerate()
            .map(|(i, (minor, mig, sms, n))| spank_carbon::gpu::BoardInfo {
                index: i as u32,
                minor,
                uuid: format!("GPU-{minor}"),
                mig,
                sm_count: sms,
                instances: (0..if mig { n } else { 0 })
                    .map(|k| spank_carbon::gpu::MigInstance {
                        gi: k as u32,
                        ci: 0,
                        sm_count: 1 + k as u32,
                        uuid: format!("MIG-{minor}-{k}"),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    })
}

proptest! {
    /// Whatever the selection (keys of the job's boards, of other boards, made up), what
    /// it resolves to is only boards the job's allocation names, never charged more
    /// than whole.
    #[test]
    fn selections_resolve_only_to_allocated_boards(
        boards in some_boards(),
        picks in proptest::collection::vec((0usize..8, 0u8..6, 0u32..20), 0..6),
        garbage in "[a-z0-9:./~,-]{0,40}",
    ) {
        use spank_carbon::gpu::map::{self as gpu_map, Key, Sel, Share};
        let n = boards.len();
        let mut allocated = std::collections::BTreeSet::new();
        let sel: Vec<Sel> = picks
            .iter()
            .map(|&(b, kind, x)| {
                let b = &boards[b % n];
                allocated.insert(b.minor);
                let key = match kind {
                    0 => Key::Minor(b.minor),
                    1 => Key::Uuid(b.uuid.clone()),
                    2 => Key::Mig { minor: b.minor, gi: x % 4, ci: (x % 2 == 0).then_some(0) },
                    3 => Key::Uuid(format!("MIG-{}-{}", b.minor, x % 4)),
                    4 => Key::Nvml { index: b.index, of: n as u32 },
                    _ => Key::Either { index: b.index, of: n as u32 },
                };
                let share = match x % 3 {
                    0 => Share::Whole,
                    1 => Share::Mps { n: 1 + u64::from(x % 100), of: 100 + u64::from(x) },
                    _ => Share::Shard { n: 1, of: 1 + u64::from(x) },
                };
                Sel { key, share }
            })
            .collect();
        if let Ok(charges) = gpu_map::resolve(&sel, &boards) {
            for c in &charges {
                prop_assert!(allocated.contains(&c.minor), "{c:?} not in {allocated:?}");
                prop_assert!(c.share > 0.0 && c.share <= 1.0, "{c:?}");
            }
        }
        // A spec from anywhere resolves only to boards it names.
        if let Some(sel) = gpu_map::parse_spec(&garbage) {
            prop_assert_eq!(gpu_map::parse_spec(&gpu_map::format_spec(&sel)), Some(sel.clone()));
            if let Ok(charges) = gpu_map::resolve(&sel, &boards) {
                for c in &charges {
                    let b = boards.iter().find(|b| b.minor == c.minor).unwrap();
                    let named = sel.iter().any(|s| match &s.key {
                        Key::Minor(m) | Key::Mig { minor: m, .. } => *m == b.minor,
                        Key::Uuid(u) => *u == b.uuid || b.instances.iter().any(|i| i.uuid == *u),
                        Key::Nvml { index, .. } | Key::Either { index, .. } => *index == b.index,
                    });
                    prop_assert!(named, "{c:?} from {garbage}");
                }
            }
        }
    }
}
