//! Go's `time.ParseDuration`, as Consul applies it to `?wait=`, to a prepared query's
//! `DNS.TTL` and to check definitions, and Go's `Duration.String` (how an agent echoes a
//! check's `Interval` and `Timeout`). The emulator keeps its own: it is the oracle the
//! server's parser is tested against, so the two must not share code.

use std::time::Duration;

/// Nanoseconds per unit, as Go spells the units.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// A Go duration such as `"300ms"`, `"1.5h"` or `"2h45m"`; negative ones are refused (no
/// Consul setting read here can be negative). Errors carry no detail: Consul answers them
/// with a fixed message.
pub fn parse(text: &str) -> Result<Duration, ()> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() || body.starts_with('-') {
        return Err(());
    }
    let mut nanos: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(())?;
        let (number, after) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or(())?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| ())?
        };
        let mut part = whole.checked_mul(scale).ok_or(())?;
        // The fraction, digit by digit, as Go does (exact to the nanosecond).
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            part += u128::from(digit - b'0') * place;
        }
        nanos = nanos.checked_add(part).ok_or(())?;
        rest = next;
    }
    // Go's durations are an int64 of nanoseconds.
    if nanos > i64::MAX as u128 {
        return Err(());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Go's `Duration.String`: `"0s"`, `"300ms"`, `"1.5µs"`, `"15s"`, `"1m0s"`, `"1h30m0s"`.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        0 => "0s".to_string(),
        1..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{}µs", decimal(ns, 1_000)),
        1_000_000..=999_999_999 => format!("{}ms", decimal(ns, 1_000_000)),
        _ => {
            let (hours, minutes) = (ns / 3_600_000_000_000, ns / 60_000_000_000 % 60);
            let seconds = decimal(ns % 60_000_000_000, 1_000_000_000);
            if hours > 0 {
                format!("{hours}h{minutes}m{seconds}s")
            } else if minutes > 0 {
                format!("{minutes}m{seconds}s")
            } else {
                format!("{seconds}s")
            }
        }
    }
}

/// `value / unit` with the fraction's trailing zeros dropped (`unit` a power of ten).
fn decimal(value: u128, unit: u128) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str, d: Duration| assert_eq!(parse(s), Ok(d), "{s}");
        ok("0", Duration::ZERO);
        ok("10s", Duration::from_secs(10));
        ok("1m30s", Duration::from_secs(90));
        ok("1.5h", Duration::from_secs(5400));
        ok("300ms", Duration::from_millis(300));
        ok(
            "2h45m0.5s",
            Duration::from_millis((2 * 3600 + 45 * 60) * 1000 + 500),
        );
        ok("+5s", Duration::from_secs(5));
        ok(".5s", Duration::from_millis(500));
        ok("1µs", Duration::from_micros(1));
        for bad in ["", "-1s", "5", "1x", "s", "1..5s", ".s", "9999999999999h"] {
            assert_eq!(parse(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn go_duration_strings() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(2_500), "2.5ms"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90 * 60), "1h30m0s"),
            (Duration::from_millis(3_723_004), "1h2m3.004s"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d), "{text} parses back");
        }
    }
}
