//! Go's `time.ParseDuration` spelling, which Kubernetes objects use for
//! durations: a sequence of decimal numbers each with a unit, e.g. `100ms`,
//! `1.5s`, `1m30s`. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. Negative
//! durations are refused; `0` alone is allowed.

use std::time::Duration;

/// Parse a duration such as `250ms` or `1m30s`.
///
/// ```
/// use std::time::Duration;
/// use trellis_types::duration::parse;
/// assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse("1.5ms").unwrap(), Duration::from_micros(1500));
/// assert!(parse("10").is_err());
/// ```
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. \"100ms\", \"2s\" or \"1m30s\"");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * nanos;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings() {
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "ms", "5", "-1s", "1x", "1.2.3s", "s5"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
