//! Go `time.ParseDuration` syntax, as Consul writes durations in its config.

use std::time::Duration;

/// Largest duration Go can represent (`math.MaxInt64` nanoseconds, ~292 years).
const GO_MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits beyond this are ignored (truncated), keeping the arithmetic exact.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Parses a Go duration string such as `"10s"`, `"1m30s"`, `"1.5h"`, `"300ms"`, `"87600h"`.
///
/// Accepted syntax is Go's: an optional `+`, then one or more `<number><unit>` pairs where
/// the number is decimal with an optional fraction (`1`, `1.5`, `.5`, `5.`) and the unit is
/// one of `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`. The bare string `"0"` is zero.
/// Unlike Go, negative durations are rejected. Values beyond Go's range (~292 years) are
/// rejected too. The error message does not repeat the input; callers add it.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let mut s = input;
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_string());
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration (use e.g. \"10s\", \"1m30s\" or \"0s\")".to_string());
    }

    let mut total: u128 = 0;
    while !s.is_empty() {
        // Integer part.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        // Optional fraction.
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (digits, rest) = rest.split_at(frac_len);
            frac_digits = digits;
            s = rest;
            if int_digits.is_empty() && frac_digits.is_empty() {
                return Err("invalid duration: \".\" is not a number".to_string());
            }
        } else if int_digits.is_empty() {
            return Err(format!(
                "invalid duration: expected a number at {:?}",
                truncate_for_message(s)
            ));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        if unit.is_empty() {
            return Err(format!(
                "missing unit after {:?} (use one of ns, us, µs, ms, s, m, h; e.g. \"10s\")",
                format_number(int_digits, frac_digits)
            ));
        }
        let unit_nanos = unit_nanos(unit).ok_or_else(|| {
            format!(
                "unknown unit {:?} (use one of ns, us, µs, ms, s, m, h)",
                truncate_for_message(unit)
            )
        })?;

        let whole = parse_digits(int_digits)
            .and_then(|v| v.checked_mul(unit_nanos))
            .ok_or_else(out_of_range)?;
        let frac = fraction_nanos(frac_digits, unit_nanos);
        total = total
            .checked_add(whole)
            .and_then(|t| t.checked_add(frac))
            .filter(|&t| t <= GO_MAX_NANOS)
            .ok_or_else(out_of_range)?;
    }

    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| out_of_range())?;
    // The remainder is < 1e9 and therefore fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| out_of_range())?;
    Ok(Duration::new(secs, nanos))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse::<u128>().ok()
}

/// `0.<digits> * unit`, truncated to whole nanoseconds.
fn fraction_nanos(digits: &str, unit_nanos: u128) -> u128 {
    let digits = &digits[..digits.len().min(MAX_FRACTION_DIGITS as usize)];
    if digits.is_empty() {
        return 0;
    }
    // At most 18 digits, so this parse cannot fail; treat a failure as zero.
    let value = digits.parse::<u128>().unwrap_or(0);
    let len = u32::try_from(digits.len()).unwrap_or(MAX_FRACTION_DIGITS);
    value * unit_nanos / 10u128.pow(len)
}

fn out_of_range() -> String {
    "duration out of range (the maximum is about 292 years, e.g. \"2562047h\")".to_string()
}

fn format_number(int_digits: &str, frac_digits: &str) -> String {
    if frac_digits.is_empty() {
        int_digits.to_string()
    } else {
        format!("{int_digits}.{frac_digits}")
    }
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_go_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn accepts_go_syntax() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("0h0m0s", Duration::ZERO),
            ("10s", secs(10)),
            ("+10s", secs(10)),
            ("1m30s", secs(90)),
            ("1h2m3s", secs(3723)),
            ("1.5h", secs(5400)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("5.s", secs(5)),
            ("300ms", ms(300)),
            ("87600h", secs(87600 * 3600)),
            ("2h45m", secs(2 * 3600 + 45 * 60)),
            ("1ns", Duration::from_nanos(1)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            ("100.00100s", Duration::new(100, 1_000_000)),
            ("2562047h", secs(2_562_047 * 3600)),
            ("1s1s", secs(2)),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("+", "empty"),
            ("-1s", "negative"),
            ("-0", "negative"),
            ("10", "missing unit"),
            ("00", "missing unit"),
            ("1h30", "missing unit"),
            ("1.5", "missing unit"),
            ("s", "expected a number"),
            (".s", "not a number"),
            ("1x", "unknown unit"),
            ("1 s", "unknown unit"),
            ("10S", "unknown unit"),
            ("1d", "unknown unit"),
            (" 1s", "expected a number"),
            ("2562048h", "out of range"),
            ("99999999999999999999999999999999999999999h", "out of range"),
        ];
        for (input, want) in cases {
            match parse_go_duration(input) {
                Ok(d) => panic!("{input:?} should fail, got {d:?}"),
                Err(e) => assert!(
                    e.contains(want),
                    "input {input:?}: error {e:?} lacks {want:?}"
                ),
            }
        }
    }
}
