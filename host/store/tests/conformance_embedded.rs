//! The conformance suite against the embedded backend (a fresh data directory per case).

use std::any::Any;
use std::sync::Arc;

use trellis_store::{EmbeddedStore, Store};

async fn setup() -> Option<(Box<dyn Any + Send>, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    Some((Box::new(dir), Arc::new(store)))
}

trellis_store::conformance_tests!(setup);
