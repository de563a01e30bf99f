//! Image references, normalised like docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`, `localhost:5000/x` is
//! `localhost:5000/x:latest`, and `name@sha256:...` names one manifest.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry of references without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of references without a tag or digest.
pub const DEFAULT_TAG: &str = "latest";

/// A reference that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Empty string.
    #[error("invalid reference format: empty image name")]
    Empty,
    /// The repository has uppercase letters.
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    /// Anything else.
    #[error("invalid reference format: {reference:?}: {reason}")]
    Invalid {
        /// The input.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A normalised image reference: registry, repository, and a tag and/or a
/// digest (at least one: `latest` is added when neither is given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let invalid = |reason| ReferenceError::Invalid {
            reference: s.to_string(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| invalid("the digest must be sha256:<64 hex>"))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(
                    "a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        if name.is_empty() {
            return Err(invalid("empty repository name"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(invalid("bad registry host"));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(repository));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components are [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Registry and repository: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same name with another digest and no tag: a "repo digest".
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// What to ask a registry for: the digest if there is one, else the tag.
    pub(crate) fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    let (host_ok, port) = match r.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:5000`.
        Some(rest) => match rest.split_once(']') {
            Some((h, after)) => (
                !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                match after {
                    "" => None,
                    a => match a.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                },
            ),
            None => return false,
        },
        None => {
            let (h, port) = match r.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (r, None),
            };
            let ok = !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            (ok, port)
        }
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("index.docker.io/x/y"), "docker.io/x/y:latest");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(norm("localhost/x:v1"), "localhost/x:v1");
        assert_eq!(norm("127.0.0.1:5000/a/b/c:v"), "127.0.0.1:5000/a/b/c:v");
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
        let r = Reference::parse("localhost:5000/a/b:t").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "a/b", Some("t"))
        );
        assert_eq!(r.name(), "localhost:5000/a/b");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox@sha256:abc",
            "busybox:",
            "busybox:-x",
            "a//b",
            "-a",
            "a/b-",
            "a..b",
            "host:/x",
            "a:b:c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            Reference::parse("Busybox"),
            Err(ReferenceError::Uppercase(_))
        ));
    }
}
