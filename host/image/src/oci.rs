//! The OCI image-spec and docker v2 documents the store reads and writes:
//! descriptors, manifests, indexes (manifest lists) and image configs, their
//! media types, and the checks that tie them together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, plain tar.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types a pull asks for, best first.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The annotation naming an image in an OCI layout's index (often just a tag).
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name.
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A problem with image content: a blob that does not match its digest, a
/// document that does not parse, a media type the store cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// A blob's bytes hash to another digest than the one naming it.
    #[error("blob {expected} has digest {actual} (corrupt or truncated content)")]
    DigestMismatch {
        /// The digest the blob was named by.
        expected: Digest,
        /// The digest of its bytes.
        actual: Digest,
    },
    /// A blob's length differs from its descriptor's size.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The blob's length.
        actual: u64,
    },
    /// A layer's uncompressed content does not match the config's `diff_ids`.
    #[error("layer {layer} uncompresses to {actual}, the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's diff id.
        expected: Digest,
        /// The digest of the uncompressed layer.
        actual: Digest,
    },
    /// A referenced blob is absent.
    #[error("blob {0} is missing")]
    Missing(Digest),
    /// A JSON document does not parse.
    #[error("invalid {what}: {message}")]
    InvalidJson {
        /// Which document.
        what: String,
        /// The parser's message.
        message: String,
    },
    /// A media type the store does not handle.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// An index lists no manifest for this machine's platform.
    #[error("no manifest for platform {os}/{architecture} in image index {index}")]
    NoMatchingPlatform {
        /// The index.
        index: Digest,
        /// The wanted OS.
        os: String,
        /// The wanted architecture.
        architecture: String,
    },
    /// A layer has entries that would be written outside the root
    /// filesystem (`../x`, a hard link to `/etc/passwd` of the host).
    #[error("layer {layer} is unsafe to unpack: {reason}")]
    UnsafeLayer {
        /// The layer.
        layer: Digest,
        /// Which entry, and why.
        reason: String,
    },
    /// The manifest lists another number of layers than the config's `diff_ids`.
    #[error("manifest {manifest} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount {
        /// The manifest.
        manifest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Diff ids in the config.
        diff_ids: usize,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// The platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's names (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The machine this runs on: linux and the host's architecture.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

/// An image manifest (OCI or docker schema 2; the fields are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config file (`application/vnd.oci.image.config.v1+json`)
/// the store uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) config: Option<ContainerConfig>,
    #[serde(default)]
    pub(crate) rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub(crate) entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) cmd: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) env: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) working_dir: Option<String>,
    #[serde(default)]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<Digest>,
}

/// A manifest or an index, told apart by media type (or by shape when the
/// media type is absent, as OCI allows).
pub(crate) enum ManifestKind {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest-like document. `media_type` is what the transport said
/// (a registry's Content-Type or a descriptor's), if anything.
pub(crate) fn parse_manifest_like(
    bytes: &[u8],
    media_type: Option<&str>,
    digest: &Digest,
) -> Result<ManifestKind, ContentError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        schema_version: Option<u32>,
    }
    let invalid = |e: serde_json::Error| ContentError::InvalidJson {
        what: format!("manifest {digest}"),
        message: e.to_string(),
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(invalid)?;
    let declared = probe
        .media_type
        .as_deref()
        .or(media_type)
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_string());
    match declared.as_deref() {
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => Ok(ManifestKind::Manifest(
            serde_json::from_slice(bytes).map_err(invalid)?,
        )),
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => Ok(ManifestKind::Index(
            serde_json::from_slice(bytes).map_err(invalid)?,
        )),
        Some(other) if other != "application/json" && other != "application/octet-stream" => {
            Err(ContentError::UnsupportedMediaType(other.to_string()))
        }
        _ if probe.schema_version == Some(1) => Err(ContentError::UnsupportedMediaType(
            "application/vnd.docker.distribution.manifest.v1+json".to_string(),
        )),
        _ if probe.manifests.is_some() => Ok(ManifestKind::Index(
            serde_json::from_slice(bytes).map_err(invalid)?,
        )),
        _ => Ok(ManifestKind::Manifest(
            serde_json::from_slice(bytes).map_err(invalid)?,
        )),
    }
}

/// Picks the manifest for `want` from an index: same OS and architecture,
/// the same variant when both name one, else the first of the OS and
/// architecture.
pub(crate) fn select_platform<'a>(
    index: &'a Index,
    index_digest: &Digest,
    want: &Platform,
) -> Result<&'a Descriptor, ContentError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .collect();
    candidates
        .iter()
        .find(|d| {
            let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
            v.is_some() && v == want.variant.as_deref()
        })
        .or_else(|| candidates.first())
        .copied()
        .ok_or_else(|| ContentError::NoMatchingPlatform {
            index: index_digest.clone(),
            os: want.os.clone(),
            architecture: want.architecture.clone(),
        })
}

/// Checks that a manifest's layers are ones the store can unpack.
pub(crate) fn check_layer_media_types(manifest: &Manifest) -> Result<(), ContentError> {
    for l in &manifest.layers {
        if !is_supported_layer(&l.media_type) {
            return Err(ContentError::UnsupportedMediaType(l.media_type.clone()));
        }
    }
    Ok(())
}

fn is_supported_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER
            | OCI_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// Parses an image config file.
pub(crate) fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ConfigFile, ContentError> {
    serde_json::from_slice(bytes).map_err(|e| ContentError::InvalidJson {
        what: format!("image config {digest}"),
        message: e.to_string(),
    })
}

/// The chain id of a stack of layers, as in the OCI image spec: the key of
/// the unpacked root filesystem they make.
pub(crate) fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut chain = it.next()?.clone();
    for d in it {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn selects_platform() {
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                desc("arm", Some("v6"), 1),
                desc("arm", Some("v7"), 2),
                desc("amd64", None, 3),
                desc("arm64", Some("v8"), 4),
            ],
            annotations: BTreeMap::new(),
        };
        let d = Digest::of(b"i");
        let pick = |a: &str, v: Option<&str>| {
            select_platform(
                &index,
                &d,
                &Platform {
                    architecture: a.into(),
                    os: "linux".into(),
                    variant: v.map(Into::into),
                },
            )
            .map(|x| x.digest.clone())
        };
        assert_eq!(pick("arm", Some("v7")).unwrap(), Digest::of(&[2]));
        assert_eq!(pick("amd64", None).unwrap(), Digest::of(&[3]));
        assert_eq!(pick("arm64", None).unwrap(), Digest::of(&[4]));
        assert!(matches!(
            pick("s390x", None),
            Err(ContentError::NoMatchingPlatform { .. })
        ));
    }

    #[test]
    fn chain_ids() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(
            chain_id(&[a.clone(), b.clone()]),
            Some(Digest::of(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(chain_id(&[]), None);
    }
}
