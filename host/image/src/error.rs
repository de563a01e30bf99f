//! The store's error type.
//!
//! Every message is complete on its own (it includes its cause), because the
//! agent shows it to users as a container's status message, as kubelet does:
//! `failed to pull and unpack image "docker.io/library/x:latest": ...`. The
//! causes stay typed in the variants' fields (`RegistryError`,
//! `UnpackError`, `io::Error`) so callers decide by type, not by text.

use std::io;
use std::path::PathBuf;

use crate::distribution::RegistryError;
use crate::oci::ContentError;
use crate::reference::ReferenceError;
use crate::unpack::UnpackError;

/// An image store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A reference that does not parse.
    #[error("{0}")]
    Reference(ReferenceError),
    /// No image has this reference, id or digest.
    #[error("image {reference:?} not found")]
    NotFound {
        /// What was looked up.
        reference: String,
    },
    /// A file operation in the store (or on a root filesystem) failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        error: io::Error,
    },
    /// The store holds inconsistent content (a missing or corrupt blob, or an
    /// unreadable references index).
    #[error("the image store is corrupt: {cause}")]
    Corrupt {
        /// What is wrong.
        cause: ContentError,
    },
    /// An archive could not be imported; the store is unchanged.
    #[error("cannot import {}: {reason}", path.display())]
    InvalidArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A pull failed; the store is unchanged. The message reads like
    /// kubelet's `ErrImagePull` ones.
    #[error("failed to pull and unpack image \"{reference}\": {cause}")]
    Pull {
        /// The normalised reference.
        reference: String,
        /// Why.
        cause: RegistryError,
    },
    /// A push failed.
    #[error("failed to push image \"{reference}\": {cause}")]
    Push {
        /// The normalised target reference.
        reference: String,
        /// Why.
        cause: RegistryError,
    },
    /// An image's layers could not be unpacked into a root filesystem.
    #[error("cannot unpack image {image}: {cause}")]
    Unpack {
        /// The image id.
        image: String,
        /// Why.
        cause: UnpackError,
    },
    /// The overlay mount of a root filesystem failed.
    #[error("cannot mount the root filesystem at {}: {error}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The kernel's error.
        error: io::Error,
    },
    /// A root filesystem is still in use and cannot be unmounted.
    #[error("cannot unmount {}: it is busy (is a container still running in it?)", target.display())]
    Busy {
        /// The mount point.
        target: PathBuf,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, error: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            error,
        }
    }
}

impl From<ReferenceError> for ImageError {
    fn from(e: ReferenceError) -> Self {
        ImageError::Reference(e)
    }
}

/// Adds a context message to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(f(), e))
    }
}
