//! Which of the served domains a name is under.

/// One of the served domains: the primary `domain` or an `alt_domain`, by its place in the
/// configured list (`Settings::domains`, the primary first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainId(usize);

impl DomainId {
    /// The primary domain (`domain`).
    pub const PRIMARY: DomainId = DomainId(0);

    /// Every domain of a list of `count`.
    pub fn all(count: usize) -> impl Iterator<Item = DomainId> {
        (0..count).map(DomainId)
    }

    /// Its place in the list.
    pub fn index(self) -> usize {
        self.0
    }
}
