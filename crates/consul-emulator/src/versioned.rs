//! A stored value with the indexes Consul keeps for it.

/// A stored value with its Consul bookkeeping indexes.
#[derive(Debug, Clone)]
pub(super) struct Versioned<T> {
    pub spec: T,
    pub create_index: u64,
    pub modify_index: u64,
}

impl<T: PartialEq> Versioned<T> {
    pub(super) fn new(spec: T, idx: u64) -> Self {
        Versioned {
            spec,
            create_index: idx,
            modify_index: idx,
        }
    }

    /// Replaces the spec; returns false (and keeps ModifyIndex) when nothing changed.
    pub(super) fn update(&mut self, spec: T, idx: u64) -> bool {
        if self.spec == spec {
            return false;
        }
        self.spec = spec;
        self.modify_index = idx;
        true
    }
}
