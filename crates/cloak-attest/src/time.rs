//! Unix seconds to and from RFC 3339 UTC text, for messages and the command line. Verification
//! itself never reads a clock: every time is an argument.

/// `2025-07-19T10:01:18Z` for a Unix time in seconds.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parse a time given as Unix seconds (`1752919278`) or RFC 3339 (`2025-07-19T10:01:18Z`,
/// `2025-07-19T12:01:18+02:00`, fractions of a second are dropped). `None` if it is neither.
pub fn parse(text: &str) -> Option<u64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num_of(&rest[1..3])?, num_of(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(secs).ok()
}

fn num_of(s: &str) -> Option<i64> {
    s.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| s.parse().ok())?
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (http://howardhinnant.github.io/date_algorithms.html).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::readme_sgx_start("2025-06-19T10:56:11Z", 1_750_330_571)]
    #[case::readme_sgx_end("2025-07-19T10:01:18Z", 1_752_919_278)]
    #[case::offset("2025-07-19T12:01:18+02:00", 1_752_919_278)]
    #[case::fraction("2025-01-06T16:07:05.472Z", 1_736_179_625)]
    #[case::leap_day("2024-02-29T00:00:00Z", 1_709_164_800)]
    #[case::unix_seconds("1752919278", 1_752_919_278)]
    fn parses(#[case] text: &str, #[case] secs: u64) {
        assert_eq!(parse(text), Some(secs));
    }

    #[rstest::rstest]
    #[case::empty("")]
    #[case::no_zone("2025-07-19T10:01:18")]
    #[case::bad_day("2025-02-30T00:00:00Z")]
    #[case::negative("-5")]
    #[case::words("yesterday")]
    #[case::before_epoch("1969-12-31T23:59:59Z")]
    fn rejects(#[case] text: &str) {
        assert_eq!(parse(text), None);
    }

    #[test]
    fn formats_what_it_parses() {
        for secs in [
            0,
            1_750_330_571,
            1_752_919_278,
            2_524_607_999,
            4_102_444_800,
        ] {
            assert_eq!(parse(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(rfc3339(1_752_919_278), "2025-07-19T10:01:18Z");
    }
}
