//! Kubernetes resource quantities ("100m", "1.5Gi", "2e3", "500Mi").

/// Why a quantity string is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl std::fmt::Display for QuantityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {}", self.0)
    }
}

impl std::error::Error for QuantityError {}

/// A parsed quantity, held exactly as `digits × 10^-decimals × multiplier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: u128,
    decimals: u32,
    base2: u32,
    base10: i32,
}

impl Quantity {
    /// Parse a Kubernetes quantity.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(format!("{s:?}"));
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let all: String = format!("{int}{frac}");
        if all.len() > 30 {
            return Err(err());
        }
        let digits: u128 = all.parse().map_err(|_| err())?;
        let (base2, base10) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| err())?;
                if !(-30..=30).contains(&exp) {
                    return Err(err());
                }
                (0, exp)
            }
            _ => return Err(err()),
        };
        Ok(Self {
            negative,
            digits,
            decimals: frac.len() as u32,
            base2,
            base10,
        })
    }

    /// The value scaled by 10^`scale`, rounded up (away from zero, as
    /// Kubernetes does), saturating at the bounds of `i64`.
    fn scaled(&self, scale: i32) -> i64 {
        let exp10 = self.base10 + scale - self.decimals as i32;
        let mut n: u128 = self.digits;
        let mut rem = false;
        if self.base2 > 0 {
            n = n.saturating_mul(1u128 << self.base2);
        }
        if exp10 >= 0 {
            for _ in 0..exp10 {
                n = n.saturating_mul(10);
            }
        } else {
            for _ in 0..(-exp10) {
                rem |= n % 10 != 0;
                n /= 10;
            }
            if rem {
                n += 1;
            }
        }
        let v = n.min(i64::MAX as u128) as i64;
        if self.negative {
            -v
        } else {
            v
        }
    }

    /// The value in thousandths (CPU in millicores).
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// The value in units (memory in bytes), rounded up.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }
}

/// Millicores of a CPU quantity ("250m" → 250, "2" → 2000).
pub fn parse_cpu_milli(s: &str) -> Result<i64, QuantityError> {
    Quantity::parse(s).map(|q| q.milli_value())
}

/// Bytes of a memory or storage quantity ("1Gi" → 1073741824, "1G" → 10^9).
pub fn parse_bytes(s: &str) -> Result<i64, QuantityError> {
    Quantity::parse(s).map(|q| q.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_kubernetes() {
        assert_eq!(parse_cpu_milli("100m").unwrap(), 100);
        assert_eq!(parse_cpu_milli("2").unwrap(), 2000);
        assert_eq!(parse_cpu_milli("0.5").unwrap(), 500);
        assert_eq!(parse_cpu_milli("1.0001").unwrap(), 1001); // rounds up
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("128974848").unwrap(), 128_974_848);
        assert_eq!(parse_bytes("129e6").unwrap(), 129_000_000);
        assert_eq!(parse_bytes("123Mi").unwrap(), 123 << 20);
        assert_eq!(parse_bytes("1k").unwrap(), 1000);
        assert_eq!(parse_bytes("1m").unwrap(), 1); // 0.001 rounds up to 1
        assert_eq!(parse_cpu_milli("-1").unwrap(), -1000);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "1.2.3", "1Xi", "--1", ".", "1e", "1e99"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
