//! Trellis' Kubernetes-compatible API server: discovery, OpenAPI, every served
//! kind with Kubernetes' validation and defaulting, and the verbs kubectl and
//! client libraries use (get, list, watch, create, update, patch, delete,
//! deletecollection, status/scale/binding), pod logs and exec through the node
//! agents, over a [`trellis_store::Store`].
//! Authentication and authorization are separate layers ([`auth`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use trellis_api::{ApiConfig, ApiServer, auth::TokenAuthenticator};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(trellis_store::EmbeddedStore::open("/tmp/trellis/store").await?);
//! let server = ApiServer::new(store, ApiConfig::new(TokenAuthenticator::single("secret", "admin"))).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6443").await?;
//! let tls = trellis_api::pki::ensure(std::path::Path::new("/tmp/trellis/pki"), &[])?;
//! server.serve(listener, Some(tls.server_config), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod admission;
pub mod auth;
pub mod discovery;
mod error;
mod handlers;
pub mod http;
mod node_proxy;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod priority;
mod protobuf;
mod quota;
pub mod registry;
pub mod selectors;
mod server;
pub mod services;
mod storage;
pub mod table;
mod util;
pub mod validation;
mod watch;
mod websocket;

pub use error::ApiError;
pub use server::{ApiConfig, ApiServer, MAX_BODY_BYTES, SYSTEM_NAMESPACES};
