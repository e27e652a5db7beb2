//! Slurm host lists (`node[1-3,07-08],login1`): [`expand`] into node names and
//! [`compress`] back (`expand(&compress(names)?) == names`, order kept).

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad host list `{0}`")]
pub struct HostlistError(pub String);

/// Upper bound on names one list may expand to: a guard against `n[0-999999999]`.
const MAX_HOSTS: usize = 1_000_000;

pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    expand_max(list, MAX_HOSTS)
}

/// [`expand`], refusing a list of more than `max` names (checked while expanding, so a
/// hostile list costs no more than `max` names of memory).
pub fn expand_max(list: &str, max: usize) -> Result<Vec<String>, HostlistError> {
    let err = || HostlistError(list.to_string());
    let max = max.min(MAX_HOSTS);
    let mut out = Vec::new();
    for item in split_top_level(list).map_err(|_| err())? {
        if item.is_empty() {
            continue;
        }
        expand_item(item, &mut out, max).map_err(|_| err())?;
        if out.len() > max {
            return Err(err());
        }
    }
    Ok(out)
}

fn split_top_level(list: &str) -> Result<Vec<&str>, ()> {
    let mut items = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(());
        }
    }
    if depth != 0 {
        return Err(());
    }
    items.push(&list[start..]);
    Ok(items)
}

fn expand_item(item: &str, out: &mut Vec<String>, max: usize) -> Result<(), ()> {
    let Some(open) = item.find('[') else {
        out.push(item.to_string());
        return Ok(());
    };
    let close = item[open..].find(']').ok_or(())? + open;
    let prefix = &item[..open];
    let rest = &item[close + 1..];
    for range in item[open + 1..close].split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        if lo.is_empty()
            || hi.is_empty()
            || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(());
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        let (a, b): (u64, u64) = (lo.parse().map_err(|_| ())?, hi.parse().map_err(|_| ())?);
        if b < a || b - a > max as u64 {
            return Err(());
        }
        for n in a..=b {
            expand_item(&format!("{prefix}{n:0width$}{rest}"), out, max)?;
            if out.len() > max {
                return Err(());
            }
        }
    }
    Ok(())
}

/// A name split at its last run of digits: `gpu07-ib` is (`gpu`, 7, `07`, `-ib`).
struct Numbered<'a> {
    prefix: &'a str,
    value: u64,
    digits: &'a str,
    suffix: &'a str,
}

fn numbered(name: &str) -> Option<Numbered<'_>> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[start..end];
    Some(Numbered {
        prefix: &name[..start],
        value: digits.parse().ok()?,
        digits,
        suffix: &name[end..],
    })
}

/// The zero-padding width [`expand`] gives a range that starts with `lo`.
fn width_of(lo: &str) -> usize {
    if lo.len() > 1 && lo.starts_with('0') {
        lo.len()
    } else {
        0
    }
}

/// The host list of `names`, in their order: runs of names that differ only in their
/// last number, consecutive and equally padded, become ranges (`node[0001-4096]`), and
/// neighbours with the same prefix and suffix share one bracket. `None` when a name is
/// empty or holds `[`, `]` or `,` (no host list can say it).
pub fn compress<S: AsRef<str>>(names: &[S]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < names.len() {
        let name = names[i].as_ref();
        if name.is_empty() || name.contains(['[', ']', ',']) {
            return None;
        }
        if !out.is_empty() {
            out.push(',');
        }
        let Some(first) = numbered(name) else {
            out.push_str(name);
            i += 1;
            continue;
        };
        // The group: following names with the same prefix and suffix.
        let mut group = vec![first];
        while let Some(next) = names.get(i + group.len()).map(|n| n.as_ref()) {
            if next.contains(['[', ']', ',']) {
                break;
            }
            match numbered(next) {
                Some(n) if n.prefix == group[0].prefix && n.suffix == group[0].suffix => {
                    group.push(n)
                }
                _ => break,
            }
        }
        i += group.len();
        if group.len() == 1 {
            out.push_str(name);
            continue;
        }
        out.push_str(group[0].prefix);
        out.push('[');
        let mut j = 0;
        while j < group.len() {
            let lo = &group[j];
            let width = width_of(lo.digits);
            let mut k = j;
            while let Some(n) = group.get(k + 1) {
                let follows = group[k].value.checked_add(1) == Some(n.value)
                    && format!("{:0width$}", n.value) == n.digits;
                if !follows {
                    break;
                }
                k += 1;
            }
            if j > 0 {
                out.push(',');
            }
            out.push_str(lo.digits);
            if k > j {
                out.push('-');
                out.push_str(group[k].digits);
            }
            j = k + 1;
        }
        out.push(']');
        out.push_str(group[0].suffix);
    }
    // Ranges can come out longer than the names themselves ("a[0,00]" for a0,a00):
    // then the plain list, which is a host list too.
    let plain_len = names
        .iter()
        .map(|n| n.as_ref().len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    if plain_len < out.len() {
        return Some(
            names
                .iter()
                .map(|n| n.as_ref())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Some(out)
}

/// Orders node names so that [`compress`] finds their ranges: by prefix and suffix
/// around the last number, then by that number (`n2` before `n10`), then as text. A key
/// comparison, so always a total order.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> (&str, &str, usize, &str, &str) {
        match numbered(s) {
            Some(n) => {
                let trimmed = n.digits.trim_start_matches('0');
                (n.prefix, n.suffix, trimmed.len(), trimmed, s)
            }
            None => (s, "", 0, "", s),
        }
    }
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(expand("node1").unwrap(), ["node1"]);
        assert_eq!(expand("node[1-3]").unwrap(), ["node1", "node2", "node3"]);
        assert_eq!(
            expand("gpu[08-10],login1").unwrap(),
            ["gpu08", "gpu09", "gpu10", "login1"]
        );
        assert_eq!(expand("n[1,3-4]x").unwrap(), ["n1x", "n3x", "n4x"]);
        assert_eq!(
            expand("r[1-2]n[1-2]").unwrap(),
            ["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        assert_eq!(expand("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn compresses_what_it_expands() {
        let names: Vec<String> = (1..=4096).map(|i| format!("node{i:04}")).collect();
        assert_eq!(compress(&names).unwrap(), "node[0001-4096]");
        let names = [
            "n1", "n2", "n3", "n5", "n9", "n10", "login", "gpu08", "gpu09", "x",
        ];
        let c = compress(&names).unwrap();
        assert_eq!(c, "n[1-3,5,9-10],login,gpu[08-09],x");
        assert_eq!(expand(&c).unwrap(), names);
        // Padding that changes inside a run, and suffixes.
        for names in [
            vec!["n9", "n10", "n010", "n011"],
            vec!["r1n01-ib", "r1n02-ib", "r2n01-ib"],
            vec!["n099", "n100", "n1000"],
            vec!["a0", "a00", "a000", "a1"],
            vec!["n1", "n1"],
            vec!["n18446744073709551615", "n18446744073709551616"],
        ] {
            let c = compress(&names).unwrap();
            assert_eq!(expand(&c).unwrap(), names, "{c}");
        }
        assert_eq!(compress(&["a,b"]), None);
        assert_eq!(compress(&[""]), None);
        assert_eq!(compress::<&str>(&[]).unwrap(), "");
    }

    #[test]
    fn natural_order_groups_ranges() {
        let mut names = vec!["n10", "n9", "m1", "n1", "n01"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["m1", "n01", "n1", "n9", "n10"]);
    }

    #[test]
    fn expand_max_bounds_the_work() {
        assert!(expand_max("n[1-10]", 10).is_ok());
        assert!(expand_max("n[1-11]", 10).is_err());
        assert!(expand_max("n[1-5],m[1-6]", 10).is_err());
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            "n[1-",
            "n]1[",
            "n[a-b]",
            "n[3-1]",
            "n[[1]]",
            "n[1-99999999999]",
        ] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }
}
