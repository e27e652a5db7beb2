//! Merging a node's part into the job's accounting field, and what sacctmgr can store there.

use std::fmt::Write as _;

use super::{find, find_run, gpus_checked, Found, Meta, NodePart, Segment, MARKER};
use crate::slurm::Differences;
use crate::units::GramsPerKwh;

/// Returns `field` with `part` merged into its record: other nodes' parts are kept
/// (those of nodes outside `allowed`, when given, are dropped), this node's part is
/// replaced, totals recomputed, and every byte outside the segment left as it was.
/// A field without a record gets one appended, after a space if it has text.
pub fn merge(field: &str, part: &NodePart, meta: &Meta, allowed: Option<&[String]>) -> String {
    merge_found(field, find(field), part, meta, allowed, None, None)
}

/// Like [`merge`], into the segment of job run `run` (`run=<start>`), which holds only
/// that run's parts: a requeued job keeps one segment per run in its row, each bound to
/// the run it measured, and other runs' segments are left byte for byte like any other
/// text. A field without that run's segment gets one appended.
pub fn merge_in_run(
    field: &str,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: u64,
) -> String {
    merge_in_run_sluid(field, part, meta, allowed, run, None)
}

/// [`merge_in_run`] that also names the run by its SLUID (`sluid=`, the last token of
/// the segment, in lower case; a SLUID the segment has already is kept). A `sluid` that
/// is not a SLUID is left out.
pub fn merge_in_run_sluid(
    field: &str,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: u64,
    sluid: Option<&str>,
) -> String {
    let sluid = sluid.and_then(crate::slurm::sluid_record_form);
    merge_found(
        field,
        find_run(field, run),
        part,
        meta,
        allowed,
        Some(run),
        sluid.as_deref(),
    )
}

fn merge_found(
    field: &str,
    found: Option<Found>,
    part: &NodePart,
    meta: &Meta,
    allowed: Option<&[String]>,
    run: Option<u64>,
    sluid: Option<&str>,
) -> String {
    // The run's SLUID: the one the segment has (every node of a run has the same), else
    // this node's. It goes last, so that readers that do not know it (older versions)
    // still read the whole record before it.
    let sluid = found
        .as_ref()
        .and_then(|f| f.sluid.clone())
        .or(sluid.map(str::to_string));
    let mut parts = found.as_ref().map(|f| f.parts.clone()).unwrap_or_default();
    if let Some(allowed) = allowed {
        parts.retain(|node, _| allowed.iter().any(|a| a == node));
    }
    parts.insert(part.node.clone(), part.clone());
    if gpus_checked(parts.values()).is_none() {
        // Only forged parts can make the counts overflow: keep this node's alone.
        parts.retain(|node, _| *node == part.node);
    }
    // The first writer's metadata stays: nodes configured differently must not undo
    // each other's writes for ever. Each part carries its own CO2e.
    let meta = match &found {
        Some(Found {
            intensity: Some(intensity),
            pue: Some(pue),
            expected_nodes,
            ..
        }) => Meta {
            intensity: GramsPerKwh(*intensity),
            pue: *pue,
            expected_nodes: expected_nodes.unwrap_or(0).max(meta.expected_nodes),
        },
        _ => *meta,
    };
    let mut segment = Segment {
        meta,
        parts,
        compact: false,
    }
    .format();
    if let Some(run) = run {
        segment.insert_str(MARKER.len(), &format!(" run={run}"));
    }
    if let Some(sluid) = sluid {
        let _ = write!(segment, " sluid={sluid}");
    }
    match found {
        Some(f) => format!("{}{}{}", &field[..f.start], segment, &field[f.end..]),
        None if field.is_empty() => segment,
        None => format!("{field} {segment}"),
    }
}

/// The largest value the accounting columns hold (TEXT: 64 KiB).
pub const FIELD_MAX_BYTES: usize = 65_535;

/// Why a field value cannot be written through sacctmgr without changing someone's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    #[error("it has upper-case letters, which this Slurm's sacctmgr would lower-case")]
    UpperCase,
    #[error("it has quote or backslash characters (or starts with `=`), which sacctmgr or slurmdbd would alter")]
    Quote,
    #[error("it has control characters")]
    Control,
    #[error("it would exceed the column's {FIELD_MAX_BYTES} bytes")]
    TooLong,
    #[error("it starts or ends with whitespace (other writers' text), which this Slurm's sacctmgr would trim")]
    Whitespace,
}

/// Checks that sacctmgr stores `value` exactly as given. Slurm before 23.02 lower-cases
/// every comment value it sets (`diffs.lowercases`), 25.05 and later trim leading and
/// trailing whitespace (`diffs.trims_whitespace`); every version turns quotes into
/// backticks.
pub fn check_writable(value: &str, diffs: &Differences) -> Result<(), Unwritable> {
    if value.len() > FIELD_MAX_BYTES {
        return Err(Unwritable::TooLong);
    }
    // sacctmgr turns quotes into backticks (and cuts the value at a closing quote when it
    // starts with one); slurmdbd puts the value into SQL unescaped, so MySQL would
    // interpret backslashes; a leading `=` is eaten by sacctmgr's key parser.
    if value.contains(['\'', '"', '\\']) || value.starts_with('=') {
        return Err(Unwritable::Quote);
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Unwritable::Control);
    }
    // 22.05's strip_quotes lower-cases ASCII letters only (it never sets a locale).
    if diffs.lowercases && value.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Unwritable::UpperCase);
    }
    // 25.05's sacctmgr trims what isspace() takes as whitespace at either end.
    let space = |c: char| c.is_ascii_whitespace() || c == '\u{b}';
    if diffs.trims_whitespace && (value.starts_with(space) || value.ends_with(space)) {
        return Err(Unwritable::Whitespace);
    }
    Ok(())
}
