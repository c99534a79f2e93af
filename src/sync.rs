//! Small synchronisation helpers shared by the token cache, the upstream pool and the simulator.

/// Locks a mutex whose data is updated in single steps, so that a panic elsewhere cannot leave
/// it half-written: a poisoned lock is used as it is.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
