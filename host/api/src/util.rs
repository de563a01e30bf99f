//! Small helpers without a better home: timestamps and names.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    crate::table::format_rfc3339(now_unix())
}

/// A random suffix for `generateName`, from upstream's alphabet (no vowels, no
/// look-alike digits) and of its length.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(crate::table::format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            crate::table::format_rfc3339(951_782_400),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            crate::table::format_rfc3339(1_700_000_000),
            "2023-11-14T22:13:20Z"
        );
        let t = 1_795_000_000;
        assert_eq!(
            crate::table::parse_rfc3339(&crate::table::format_rfc3339(t)),
            Some(t)
        );
    }

    #[test]
    fn suffixes_are_five_safe_characters() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }
}
