//! Go's `time.ParseDuration`, as Consul applies it to `?wait=` and to a prepared query's
//! `DNS.TTL`. The emulator keeps its own: it is the oracle the server's parser is tested
//! against, so the two must not share code.

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
}
