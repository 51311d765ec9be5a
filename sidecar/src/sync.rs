//! Locking shared by every module: a poisoned lock is taken over, not
//! propagated.

use std::sync::{Mutex, MutexGuard};

/// Poison-tolerant lock: a panic elsewhere must not take the proxy down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
