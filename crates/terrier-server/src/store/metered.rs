//! [`MeteredStore`]: any [`Store`] with each call timed and its failures
//! counted in the node's [`Metrics`] (`terrier_store_duration_seconds`,
//! `terrier_store_errors_total`, labelled by operation). Wrapping keeps the
//! backends free of metrics code.

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Claim, Lease, NodeInfo, Reservation, Store, StoreError, Swept};
use crate::metrics::Metrics;

/// A store whose calls are measured.
pub struct MeteredStore {
    /// The real backend.
    inner: Arc<dyn Store>,
    /// Where timings and errors go.
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        // "No free port" and "taken" are answers, not store failures.
        let failed = matches!(result, Err(StoreError::Backend(_)));
        self.metrics.store_call(op, started.elapsed(), failed);
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<Lease, StoreError> {
        self.timed("claim", self.inner.claim(claim)).await
    }
    async fn reassign_port(
        &self,
        name: &str,
        service: &str,
        avoid: &[u16],
        port_range: RangeInclusive<u16>,
    ) -> Result<Lease, StoreError> {
        self.timed("reassign_port", self.inner.reassign_port(name, service, avoid, port_range)).await
    }
    async fn release(&self, name: &str, session: &str, now_ms: u64, grace_ms: u64) -> Result<(), StoreError> {
        self.timed("release", self.inner.release(name, session, now_ms, grace_ms)).await
    }
    async fn by_subdomain(&self, subdomain: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.timed("by_subdomain", self.inner.by_subdomain(subdomain, now_ms)).await
    }
    async fn by_name(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.timed("by_name", self.inner.by_name(name, now_ms)).await
    }
    async fn sweep(&self, now_ms: u64) -> Result<Swept, StoreError> {
        self.timed("sweep", self.inner.sweep(now_ms)).await
    }
    async fn recover_node(&self, node: &str, now_ms: u64, grace_ms: u64) -> Result<usize, StoreError> {
        self.timed("recover_node", self.inner.recover_node(node, now_ms, grace_ms)).await
    }
    async fn register_node(&self, node: &NodeInfo, ttl_ms: u64) -> Result<(), StoreError> {
        self.timed("register_node", self.inner.register_node(node, ttl_ms)).await
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        self.timed("nodes", self.inner.nodes()).await
    }
    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        self.timed("dead_nodes", self.inner.dead_nodes()).await
    }
    async fn holders(&self, names: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.timed("holders", self.inner.holders(names)).await
    }
    async fn restore(&self, lease: &Lease, now_ms: u64) -> Result<Lease, StoreError> {
        self.timed("restore", self.inner.restore(lease, now_ms)).await
    }
    async fn leases(&self, now_ms: u64) -> Result<Vec<Lease>, StoreError> {
        self.timed("leases", self.inner.leases(now_ms)).await
    }
    async fn reserve(&self, name: &str, subdomain: &str, now_ms: u64) -> Result<(), StoreError> {
        self.timed("reserve", self.inner.reserve(name, subdomain, now_ms)).await
    }
    async fn unreserve(&self, name: &str) -> Result<bool, StoreError> {
        self.timed("unreserve", self.inner.unreserve(name)).await
    }
    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.timed("reservations", self.inner.reservations()).await
    }
    async fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("get_blob", self.inner.get_blob(key)).await
    }
    async fn put_blob(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.timed("put_blob", self.inner.put_blob(key, value)).await
    }
    async fn blob_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.timed("blob_or_insert", self.inner.blob_or_insert(key, value)).await
    }
}
