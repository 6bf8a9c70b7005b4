//! What a copy is, as everything outside the copy lifecycle reads it.

/// State of this pod's copy of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyStatus {
    /// Queued or loading.
    Loading,
    /// Loaded and serving.
    Loaded,
    /// The load failed (message).
    Failed(String),
    /// The load could not run for a reason outside the model (the KV store or the runtime
    /// was unavailable): waiters get UNAVAILABLE, and nothing is held against the model.
    Interrupted(String),
}

/// How a new copy may find room in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Evict least recently used copies if needed (a request or a scale-up wants it here).
    MayEvict,
    /// Only into free room: a copy moved away from an evicting pod must not evict here in
    /// turn, or two full pods hand their copies back and forth until every one is evicted.
    FreeOnly,
}
