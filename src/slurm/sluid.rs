//! The SLUID, Slurm's unique job identifier (25.11+, `SLURM_JOB_SLUID` in the
//! prolog/epilog environment).
//!
//! Slurm 26.05's `print_sluid` (src/common/sluid.c) writes a 64-bit id as `s` and 13
//! Crockford base-32 digits, upper case (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`: no I, L, O,
//! U); 13 digits hold 65 bits, so the first carries only the top 4 and is at most `F`.
//! Its `str2sluid` accepts either case. Anything else is refused here.

/// Crockford's base-32 digits, as Slurm prints them.
const DIGITS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The SLUID in `text` exactly as Slurm prints it (`s` + 13 upper-case digits), or
/// `None` for anything else.
pub fn parse_sluid(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() != 14 || b[0] != b's' {
        return None;
    }
    let value = |c: u8| DIGITS.iter().position(|&d| d == c);
    if !b[1..].iter().all(|&c| value(c).is_some()) || value(b[1])? >= 16 {
        return None;
    }
    Some(text.to_string())
}

/// The form kept in the accounting record: lower case (the record's grammar; Slurm reads
/// either case). `None` unless `text` is a SLUID in this form or Slurm's.
pub fn record_form(text: &str) -> Option<String> {
    let upper = format!("s{}", text.get(1..)?.to_ascii_uppercase());
    (text.starts_with('s') && text.len() == 14)
        .then(|| parse_sluid(&upper))
        .flatten()
        .map(|s| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slurm's print_sluid, for the test: `s` and 13 five-bit digits, most significant
    /// first.
    fn print_sluid(v: u64) -> String {
        let mut s = String::from("s");
        for i in (0..13).rev() {
            let shift = 5 * i;
            let d = if shift >= 64 { 0 } else { (v >> shift) & 0x1f };
            s.push(DIGITS[d as usize] as char);
        }
        s
    }

    #[test]
    fn accepts_what_slurm_prints_and_nothing_else() {
        for v in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            let s = print_sluid(v);
            assert_eq!(parse_sluid(&s).as_deref(), Some(s.as_str()));
            let lower = record_form(&s).unwrap();
            assert_eq!(lower, s.to_ascii_lowercase());
            assert_eq!(record_form(&lower).as_deref(), Some(lower.as_str()));
        }
        assert_eq!(print_sluid(u64::MAX), "sFZZZZZZZZZZZZ");
        for bad in [
            "",
            "s",
            "S0123456789ABC",  // Slurm prints a lower-case s
            "s0123456789AB",   // 12 digits
            "s0123456789ABCD", // 14 digits
            "s0123456789ABCI", // no I, L, O, U in Crockford's digits
            "s0123456789ABCU",
            "sG123456789ABCD"[..14].as_ref(), // first digit above F: more than 64 bits
            "s0123456789ABC\n",
            "s01234567 9ABC",
            "x0123456789ABC",
            "s0123456789abc", // the environment has Slurm's upper case
        ] {
            assert_eq!(parse_sluid(bad), None, "{bad:?}");
        }
        assert_eq!(record_form("S0123456789ABC"), None);
        assert_eq!(record_form("s0123456789abi"), None);
        assert_eq!(record_form("sg123456789abc"), None);
    }
}
