//! Resource quantities (`500m`, `1.5Gi`, `2e3`): enough of upstream's
//! parser to reject malformed values and to compare requests with limits.
//! trellis-types has a full parser, but this crate does not depend on it.

/// Upstream's decoding message for a malformed quantity.
pub(crate) const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A parsed quantity in billionths of a unit, saturated far beyond any
/// real resource, so comparisons stay exact without floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Quantity(i128);

impl Quantity {
    pub(crate) fn is_negative(self) -> bool {
        self.0 < 0
    }
}

/// Parses a quantity; `None` when malformed.
pub(crate) fn parse(s: &str) -> Option<Quantity> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let num_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_len);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }

    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            (exp.parse::<i32>().ok()?.clamp(-100, 100), 0)
        }
    };

    let mut mantissa: i128 = 0;
    for c in whole.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .saturating_mul(10)
            .saturating_add(i128::from(c - b'0'));
    }
    let frac_digits = i32::try_from(frac.len()).ok()?;
    let scale = exp10 + 9 - frac_digits;
    let mut value = mantissa;
    if scale >= 0 {
        for _ in 0..scale {
            value = value.saturating_mul(10);
        }
    } else {
        // Upstream rounds sub-nano precision up.
        let divisor = (0..-scale).fold(1i128, |d, _| d.saturating_mul(10));
        value = value / divisor + i128::from(value % divisor != 0);
    }
    value = value.saturating_mul(1i128 << exp2);
    Some(Quantity(if negative { -value } else { value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        assert_eq!(parse("1"), parse("1000m"));
        assert_eq!(parse("1.5"), parse("1500m"));
        assert_eq!(parse("1Gi"), parse("1024Mi"));
        assert_eq!(parse("1k"), parse("1e3"));
        assert!(parse("500m") < parse("1"));
        assert!(parse("129Mi") > parse("128Mi"));
        assert!(parse("-1").unwrap().is_negative());
        assert!(parse(".5").is_some());
        for bad in ["", "abc", "1x", "1..2", "1e", "--1", "1Gii", "."] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
