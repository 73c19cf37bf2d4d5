//! Shared state compared by identity. DataFusion requires functions to be
//! `Eq` and `Hash`; a session's functions hold its catalog or settings,
//! and two are the same function when they hold the same ones.

use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// An `Arc` equal to another only when both point to the same value.
#[derive(Debug)]
pub struct ByAddress<T>(pub Arc<T>);

impl<T> Clone for ByAddress<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> PartialEq for ByAddress<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for ByAddress<T> {}

impl<T> Hash for ByAddress<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

impl<T> Deref for ByAddress<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_to_the_same_value() {
        let a = ByAddress(Arc::new(1));
        assert_eq!(a, a.clone());
        assert_ne!(a, ByAddress(Arc::new(1)), "an equal value elsewhere is another");
    }
}
