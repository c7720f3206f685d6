//! Taking a lock that a panic elsewhere has poisoned: [`LockExt::locked`] for a `Mutex`,
//! [`RwLockExt::read_locked`] and [`RwLockExt::write_locked`] for an `RwLock`.
//!
//! Why: a panic while a task holds a lock (a bug in one request's handler, one fill, one
//! report) must not take the node down with it. The standard library poisons the lock, and
//! every later `lock().unwrap()` would panic too, so each task that touches the same state
//! would die in turn, long after the one that failed, and leave a process that runs but does
//! nothing. The data is still consistent where a critical section is a single update (an
//! insert, a remove, an assignment, a `take`, a bit set, the token bucket's one reservation):
//! a panic before it leaves the data as it was, after it as it is meant to be, and nothing
//! half-changed. That is so for most locks taken this way (the store's titles and its sets of
//! removed and damaged titles, the trust list, the token bucket, the tracker's connection
//! table). Others change several things under one lock (the appliance's fills, the store's
//! recent reads, the tracker's core) and were taken the same way before this helper: for them
//! the trade-off is a possibly half-made change against a node whose every later task panics.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `Mutex::lock` that takes the lock also when a panic poisoned it (see the module).
pub trait LockExt<T: ?Sized> {
    /// Waits for the lock and takes it, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `RwLock::read` and `RwLock::write` that take the lock also when a panic poisoned it (see
/// the module).
pub trait RwLockExt<T: ?Sized> {
    /// Waits for shared access and takes it, poisoned or not.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Waits for exclusive access and takes it, poisoned or not.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_taken_with_its_data() {
        let m = Mutex::new(vec![1]);
        let _ = std::panic::catch_unwind(|| {
            let mut held = m.lock().unwrap();
            held.push(2);
            panic!("while holding the lock");
        });
        assert!(m.lock().is_err(), "the panic poisoned the mutex");
        m.locked().push(3);
        assert_eq!(*m.locked(), [1, 2, 3]);

        let rw = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let mut held = rw.write().unwrap();
            *held = 2;
            panic!("while holding the lock");
        });
        assert!(rw.read().is_err(), "the panic poisoned the rwlock");
        *rw.write_locked() += 1;
        assert_eq!(*rw.read_locked(), 3);
    }
}
