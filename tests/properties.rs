//! Property tests (fuzzing) of the parsers that read outside input: the comment field
//! and its merge, configuration, state and pending files, host lists, SLURM_JOB_GPUS,
//! sacct output. A short run is part of the test suite (256 cases each); scripts/bench.sh
//! runs a long one (PROPTEST_CASES=20000).

use proptest::prelude::*;

use spank_carbon::accounting::{parse_sacct_rows, Delivery};
use spank_carbon::config::Config;
use spank_carbon::record::{self, Meta, Method, NodePart, MARKER};
use spank_carbon::sampler::SamplerState;
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
                flags in proptest::collection::vec("[a-z]{1,10}", 0..3)) -> NodePart {
        NodePart {
            node,
            wh,
            gpus,
            co2e_g: wh * 0.75,
            method,
            start: start as f64 + tenth as f64 / 10.0,
            end: (start + len) as f64,
            coverage: cov,
            flags,
            peak_w: None,
            intensity_src: Some("fixed".into()),
            embodied_g: None,
        }
        .rounded()
    }
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
        let _ = record::check_writable(&s, true);
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
        let _ = spank_carbon::hostlist::expand(&s);
        let _ = spank_carbon::gres::parse_indices(&s);
    }

    #[test]
    fn sacct_output_never_panics(job in 1u32..1000, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_sacct_rows(&[job], &bytes, "|");
        let _ = parse_sacct_rows(&[job], &bytes, "#sc0123#");
    }

    /// Whatever a user writes into a field, with any guess of the delimiter but the real
    /// one, sacct's output for one row is still one row with that text as its field.
    #[test]
    fn field_text_never_forges_a_row(text in "[ -~\n]{0,200}") {
        let delim = spank_carbon::accounting::row_delimiter();
        prop_assume!(!text.contains(&delim));
        let out = format!("7{d}7{d}COMPLETED{d}10{d}11{d}20{d}{text}{d}\n", d = delim);
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
    assert!(spank_carbon::state::read_json::<SamplerState>(&p).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
