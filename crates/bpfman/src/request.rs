//! The request a manager call runs for: whether its caller is still waiting.
//!
//! The API layer runs each call on a blocking thread inside [`scope`], with a flag that
//! turns false when the client cancels, times out or goes away. The manager calls
//! [`check`] before it starts work and again after every wait (the reconciliation gate,
//! an object lock), so a request nobody waits for any more does not start later.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

thread_local! {
    static ALIVE: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` as the work of a request whose caller waits while `alive` is true.
pub fn scope<T>(alive: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    let prev = ALIVE.with(|a| a.replace(Some(alive)));
    let r = f();
    ALIVE.with(|a| *a.borrow_mut() = prev);
    r
}

/// Err when the caller of the request this thread works for has given up.
pub fn check() -> Result<()> {
    let gone = ALIVE.with(|a| {
        a.borrow()
            .as_ref()
            .is_some_and(|f| !f.load(Ordering::SeqCst))
    });
    if gone {
        Err(Error::cancelled(
            "the client cancelled the request or its deadline passed before the work \
             started; nothing was done",
        ))
    } else {
        Ok(())
    }
}

/// Sets its flag to false when dropped: held by the request's future.
pub struct AliveGuard(pub Arc<AtomicBool>);

impl AliveGuard {
    pub fn new() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Default for AliveGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_request_does_not_start() {
        let g = AliveGuard::new();
        let flag = g.0.clone();
        assert!(scope(flag.clone(), check).is_ok());
        drop(g);
        assert!(scope(flag, check).is_err());
        // Outside any request: always fine.
        assert!(check().is_ok());
    }
}
