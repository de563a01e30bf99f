//! The conformance suite against a real etcd started on loopback (one per case).
//!
//! Under `CI=true` a missing `etcd` binary fails these tests; elsewhere they skip loudly.

use std::any::Any;
use std::sync::Arc;

use trellis_store::testing::EtcdServer;
use trellis_store::Store;

async fn setup() -> Option<(Box<dyn Any + Send>, Arc<dyn Store>)> {
    let etcd = EtcdServer::start_or_skip("etcd conformance").await?;
    let store = etcd.store().await.unwrap();
    Some((Box::new(etcd), Arc::new(store)))
}

trellis_store::conformance_tests!(setup);
