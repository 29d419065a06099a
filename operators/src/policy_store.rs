//! Published policy versions: immutable snapshots of the weights, by version.
//!
//! The optimizer stage publishes the snapshot of version `t + 1` before its step `t` completes in
//! the graph, so that when the version token travels the feedback edge
//! ([`shareflow_runtime::versions`]), the weights it names are there. Rollout and old-log-prob
//! stages read snapshots, never the weights an optimizer step is writing.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use shareflow_runtime::stage::Failure;

use crate::policy::PolicyModel;

/// A shared map of published versions (cheap to clone; clones share the map).
#[derive(Debug, Clone, Default)]
pub struct PolicyStore {
    inner: Arc<(Mutex<BTreeMap<u64, PolicyModel>>, Condvar)>,
}

impl PolicyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `model` (a snapshot) under its version.
    pub fn publish(&self, model: PolicyModel) {
        let (map, ready) = &*self.inner;
        if let Ok(mut m) = map.lock() {
            m.insert(model.version(), model);
        }
        ready.notify_all();
    }

    /// The snapshot of `version`, waiting until it is published, or an error once `failure` is
    /// set (another stage failed and the version will never come).
    pub fn wait(&self, version: u64, failure: &Failure) -> Result<PolicyModel, String> {
        let (map, ready) = &*self.inner;
        let mut m = map
            .lock()
            .map_err(|_| "the policy store is poisoned".to_string())?;
        loop {
            if let Some(p) = m.get(&version) {
                return Ok(p.clone());
            }
            if failure.is_set() {
                return Err(format!(
                    "policy version {version} was never published: another stage failed"
                ));
            }
            m = ready
                .wait_timeout(m, Duration::from_millis(100))
                .map_err(|_| "the policy store is poisoned".to_string())?
                .0;
        }
    }

    /// The published snapshot of `version`, if any.
    pub fn get(&self, version: u64) -> Option<PolicyModel> {
        self.inner.0.lock().ok()?.get(&version).cloned()
    }

    /// Drops every version older than `oldest`.
    pub fn retain_from(&self, oldest: u64) {
        if let Ok(mut m) = self.inner.0.lock() {
            *m = m.split_off(&oldest);
        }
    }

    /// The published versions in `range`, oldest first.
    pub fn versions(&self, range: impl std::ops::RangeBounds<u64>) -> Vec<PolicyModel> {
        self.inner
            .0
            .lock()
            .map(|m| m.range(range).map(|(_, p)| p.clone()).collect())
            .unwrap_or_default()
    }
}
