//! Slurm host lists (`node[1-3,07-08],login1`) expanded into node names.

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad host list `{0}`")]
pub struct HostlistError(pub String);

/// Upper bound on names one list may expand to: a guard against `n[0-999999999]`.
const MAX_HOSTS: usize = 1_000_000;

pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let err = || HostlistError(list.to_string());
    let mut out = Vec::new();
    for item in split_top_level(list).map_err(|_| err())? {
        if item.is_empty() {
            continue;
        }
        expand_item(item, &mut out).map_err(|_| err())?;
        if out.len() > MAX_HOSTS {
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

fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), ()> {
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
        if b < a || b - a > MAX_HOSTS as u64 {
            return Err(());
        }
        for n in a..=b {
            expand_item(&format!("{prefix}{n:0width$}{rest}"), out)?;
            if out.len() > MAX_HOSTS {
                return Err(());
            }
        }
    }
    Ok(())
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
