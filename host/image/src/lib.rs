//! The node-local image store: where the node agent gets a container's root
//! filesystem and its image's run settings.
//!
//! Images come in by [`ImageStore::import`] (an OCI image layout tar or a
//! `docker save` archive, plain or gzip) or [`ImageStore::pull`] (the OCI
//! distribution protocol), are found by [`ImageStore::resolve`] under
//! docker-style references (`busybox` is `docker.io/library/busybox:latest`)
//! or ids, and give containers a writable root by
//! [`ImageStore::prepare_rootfs`]: an overlay mount over the image's layers,
//! unpacked once and flattened into one read-only tree shared by every
//! container of the image (whiteouts are carried out while flattening).
//!
//! Content lives under one directory, addressed by sha256 digest, and is
//! verified on the way in; an import or pull that fails leaves the store as
//! it was. Several processes may use one store at once (the agent and
//! `trellis image import`): see [`ImageStore`] for the layout and the locks.
//! All calls block; call them from a blocking thread.
//!
//! ```no_run
//! use trellis_image::{ImageStore, PullOptions};
//! # fn main() -> Result<(), trellis_image::ImageError> {
//! let store = ImageStore::open("/var/lib/trellis/images".as_ref())?;
//! store.import("busybox.tar".as_ref())?;
//! let image = store.resolve("busybox")?.expect("imported");
//! assert_eq!(image.config.cmd, ["sh"]);
//! let rootfs = store.prepare_rootfs(&image, "/run/trellis/c1".as_ref())?;
//! // ... run a container in `rootfs` ...
//! store.release_rootfs("/run/trellis/c1".as_ref())?;
//! store.pull("localhost:5000/app:v1", &PullOptions::default())?;
//! # Ok(()) }
//! ```

mod digest;
mod distribution;
mod error;
mod import;
mod oci;
mod reference;
mod rootfs;
mod store;
mod unpack;

pub use digest::{Digest, DigestError};
pub use distribution::{PullOptions, RegistryAuth, RegistryError};
pub use error::ImageError;
pub use oci::{ContentError, Platform};
pub use reference::{Reference, ReferenceError, DEFAULT_REGISTRY, DEFAULT_TAG};
pub use rootfs::{is_mount_point, mount_rootfs, StagedRootfs};
pub use store::{Image, ImageConfig, ImageStore};
pub use unpack::{secure_join, UnpackError};
