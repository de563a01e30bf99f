//! The CRI log format, one record per line:
//! `<RFC3339Nano UTC time> <stdout|stderr> <F|P> <content>\n`, where `F` ends a
//! line and `P` is a partial line continued by the next record (written when a
//! line grows past [`MAX_LINE`] or the stream ends without a newline).

use std::io::Write;
use std::time::SystemTime;

/// Longest line written as one record; longer lines are split into `P`
/// records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits one stream's bytes into records, keeping an unfinished line until
/// its newline arrives.
#[derive(Debug)]
pub struct LineFramer {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineFramer {
    /// A framer for `stream`.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Frame `data` and append complete records to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..nl]);
            self.emit(true, out)?;
            rest = &rest[nl + 1..];
        }
        self.pending.extend_from_slice(rest);
        while self.pending.len() >= MAX_LINE {
            let tail = self.pending.split_off(MAX_LINE);
            self.emit(false, out)?;
            self.pending = tail;
        }
        Ok(())
    }

    /// The stream ended: write what is left as a partial record.
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.emit(false, out)?;
        }
        Ok(())
    }

    fn emit(&mut self, full: bool, out: &mut impl Write) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(self.pending.len() + 48);
        rec.extend_from_slice(rfc3339_nano(SystemTime::now()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(self.stream.name().as_bytes());
        rec.extend_from_slice(if full { b" F " } else { b" P " });
        rec.extend_from_slice(&self.pending);
        rec.push(b'\n');
        self.pending.clear();
        out.write_all(&rec)
    }
}

/// `t` as RFC 3339 in UTC with nanoseconds, as Kubernetes prints log times.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (y, m, day, hh, mm, ss) = trellis_types::time::utc_parts(d.as_secs() as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{:09}Z",
        d.subsec_nanos()
    )
}

/// `t` as RFC 3339 in UTC to the second, as Kubernetes' `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    trellis_types::time::rfc3339(d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_format_like_kubernetes() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339_nano(t), "2026-11-18T11:06:40.000000005Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn lines_become_full_and_partial_records() {
        let mut f = LineFramer::new(Stream::Stderr);
        let mut out = Vec::new();
        f.push(b"hello\nwor", &mut out).unwrap();
        f.push(b"ld\ntail", &mut out).unwrap();
        f.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let recs: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(2, ' ').nth(1).unwrap())
            .collect();
        assert_eq!(recs, ["stderr F hello", "stderr F world", "stderr P tail"]);
    }

    #[test]
    fn long_lines_are_split() {
        let mut f = LineFramer::new(Stream::Stdout);
        let mut out = Vec::new();
        f.push(&vec![b'x'; MAX_LINE + 10], &mut out).unwrap();
        f.push(b"\n", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "F"]);
    }
}
