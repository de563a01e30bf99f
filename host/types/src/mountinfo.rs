//! Reading `/proc/<pid>/mountinfo` text (the caller reads the file): mount
//! points, filesystem types and super options, with the kernel's octal
//! escapes undone.

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (unescaped).
    pub mount_point: String,
    /// The filesystem type (`overlay`, `tmpfs`, ...).
    pub fs_type: String,
    /// The per-superblock options (`lowerdir=...` for overlay), still
    /// escaped: split them before unescaping parts.
    pub super_options: String,
}

/// Every mount in a mountinfo text, in order.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fs_type = r.next()?.to_string();
            let _source = r.next()?;
            Some(MountEntry {
                mount_point: unescape(mount_point),
                fs_type,
                super_options: r.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space; also tab, newline and
/// backslash).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let text =
            "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - overlay overlay rw,lowerdir=/l1:/l2\n\
                    37 35 0:5 / /dev rw - devtmpfs udev rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, "/mnt/a b");
        assert_eq!(m[0].fs_type, "overlay");
        assert_eq!(m[0].super_options, "rw,lowerdir=/l1:/l2");
        assert_eq!(m[1].mount_point, "/dev");
        assert_eq!(unescape(r"/a\040b\\"), r"/a b\\");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
    }
}
