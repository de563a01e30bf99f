//! Quantities as upstream's `resource.Quantity` holds them for LimitRanger:
//! exact values (nano precision, rounded up as upstream's parser does), a
//! format remembered from the suffix, addition and comparison, and
//! upstream's canonical `String()`.
//!
//! `trellis_sdk::quantity` checks the syntax (so malformed values are refused
//! with the same message everywhere), but its type keeps no format and has no
//! exact arithmetic; upstream's messages print sums of container requests in
//! canonical form (`500m` + `500m` is `1`, `1.5Gi` is `1536Mi`), so this
//! module adds that.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

const NANOS: i128 = 1_000_000_000;

/// Upstream's `resource.MaxMilliValue`: above it, comparisons use whole units.
pub const MAX_MILLI_VALUE: i64 = i64::MAX / 1000;

/// How a quantity was written, which decides how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `1e3`, `129e6`.
    DecimalExponent,
    /// `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// No suffix or `n`, `u`, `m`, `k`, `M`, `G`, ...
    DecimalSI,
}

/// An exact quantity.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Quantity {
    /// Upstream's zero value (`resource.Quantity{}`).
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// Parse a quantity string.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        trellis_sdk::quantity::Quantity::parse(s).map_err(|e| e.to_string())?;
        let bad = || format!("invalid quantity {text:?}");
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(end);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let (exp10, exp2, format) = match suffix {
            "" => (0, 0, Format::DecimalSI),
            "n" => (-9, 0, Format::DecimalSI),
            "u" => (-6, 0, Format::DecimalSI),
            "m" => (-3, 0, Format::DecimalSI),
            "k" => (3, 0, Format::DecimalSI),
            "M" => (6, 0, Format::DecimalSI),
            "G" => (9, 0, Format::DecimalSI),
            "T" => (12, 0, Format::DecimalSI),
            "P" => (15, 0, Format::DecimalSI),
            "E" => (18, 0, Format::DecimalSI),
            "Ki" => (0, 10, Format::BinarySI),
            "Mi" => (0, 20, Format::BinarySI),
            "Gi" => (0, 30, Format::BinarySI),
            "Ti" => (0, 40, Format::BinarySI),
            "Pi" => (0, 50, Format::BinarySI),
            "Ei" => (0, 60, Format::BinarySI),
            e => {
                let exp: i32 = e
                    .strip_prefix(['e', 'E'])
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(bad)?;
                (exp, 0, Format::DecimalExponent)
            }
        };
        let mut mantissa: i128 = 0;
        for c in whole.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .saturating_mul(10)
                .saturating_add(i128::from(c - b'0'));
        }
        mantissa = mantissa.saturating_mul(1i128 << exp2);
        let scale = exp10 + 9 - frac.len() as i32;
        let mut nanos = mantissa;
        if scale >= 0 {
            for _ in 0..scale {
                nanos = nanos.saturating_mul(10);
            }
        } else {
            // Upstream rounds anything finer than a nano up to the next nano.
            let divisor = (0..-scale).fold(1i128, |d, _| d.saturating_mul(10));
            nanos = nanos / divisor + i128::from(nanos % divisor != 0);
        }
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// A quantity from JSON: a string, or a bare number as upstream's
    /// decoder also accepts.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            other => Err(format!("invalid quantity {other}")),
        }
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Upstream's `Value()`: whole units, rounded up, saturating.
    pub fn value(&self) -> i64 {
        scaled(self.nanos, NANOS)
    }

    /// Upstream's `MilliValue()`: thousandths, rounded up, saturating.
    pub fn milli_value(&self) -> i64 {
        scaled(self.nanos, 1_000_000)
    }

    /// Upstream's `Add`: the sum keeps this quantity's format, unless this
    /// one is zero.
    pub fn add(&mut self, other: &Quantity) {
        if self.nanos == 0 {
            self.format = other.format;
        }
        self.nanos = self.nanos.saturating_add(other.nanos);
    }

    /// Upstream's exact `Cmp`.
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// `nanos / per`, rounded away from zero, saturating at `i64`.
fn scaled(nanos: i128, per: i128) -> i64 {
    let mut v = nanos / per;
    if nanos % per != 0 {
        v += nanos.signum();
    }
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl fmt::Display for Quantity {
    /// Upstream's canonical form (`CanonicalizeBytes`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let binary = self.format == Format::BinarySI
            && self.nanos.abs() >= 1024 * NANOS
            && self.nanos % NANOS == 0;
        if binary {
            let mut n = self.nanos / NANOS;
            let mut exp = 0;
            while exp < 6 && n % 1024 == 0 {
                n /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return write!(f, "{n}{suffix}");
        }
        // Decimal: strip trailing zeros, then lower the exponent to a
        // multiple of 3.
        let mut n = self.nanos;
        let mut exp: i32 = -9;
        while n % 10 == 0 {
            n /= 10;
            exp += 1;
        }
        match exp.rem_euclid(3) {
            1 => {
                n *= 10;
                exp -= 1;
            }
            2 => {
                n *= 100;
                exp -= 2;
            }
            _ => {}
        }
        let si = match exp {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        match (self.format, si) {
            (Format::DecimalExponent, _) | (_, None) if exp != 0 => write!(f, "{n}e{exp}"),
            (_, si) => write!(f, "{n}{}", si.unwrap_or("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn prints_upstreams_canonical_form() {
        for (input, canonical) in [
            ("100m", "100m"),
            ("0.5", "500m"),
            ("1000m", "1"),
            ("2", "2"),
            ("1.5", "1500m"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("512", "512"),
            ("1k", "1k"),
            ("1.5k", "1500"),
            ("1000M", "1G"),
            ("1e3", "1e3"),
            ("129e6", "129e6"),
            ("128974848", "128974848"),
            ("0", "0"),
            ("0Gi", "0"),
            ("100Ki", "100Ki"),
            ("1023", "1023"),
            ("0.1Ki", "102400m"),
            ("10u", "10u"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn values_round_up_like_upstream_and_the_sdk() {
        for s in ["100m", "1.0001", "1Gi", "1m", "129e6", "2", "0.5"] {
            let sdk = trellis_sdk::quantity::Quantity::parse(s).unwrap();
            assert_eq!(q(s).milli_value(), sdk.milli_value(), "{s}");
            assert_eq!(q(s).value(), sdk.value(), "{s}");
        }
    }

    #[test]
    fn sums_keep_the_first_format() {
        let mut a = q("512Mi");
        a.add(&q("524288Ki"));
        assert_eq!(a.to_string(), "1Gi");
        let mut b = q("500m");
        b.add(&q("0.5"));
        assert_eq!(b.to_string(), "1");
        let mut z = Quantity::ZERO;
        z.add(&q("1Gi"));
        assert_eq!(z.to_string(), "1Gi");
        assert_eq!(q("1Gi").cmp_value(&q("1073741824")), Ordering::Equal);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Quantity::parse("abc").is_err());
        assert!(Quantity::from_json(&serde_json::json!(true)).is_err());
        assert_eq!(
            Quantity::from_json(&serde_json::json!(2))
                .unwrap()
                .to_string(),
            "2"
        );
    }
}
