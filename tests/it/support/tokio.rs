//! The `tokio` that the tests see: all of tokio, except that `#[tokio::test]` runs its body under
//! a time limit, so that a hang fails the test instead of blocking the run.
//!
//! `#[tokio::test]` builds its runtime through the path `tokio::runtime::Builder` as written at
//! the test (tokio-macros resolves `tokio` there). A module that says
//! `use crate::support::tokio;` therefore gets the [`runtime::Builder`] below, whose runtime
//! wraps the body in `tokio::time::timeout`. Support code that a test cannot do without (the
//! simulator, the proxy, a child process) calls [`assert_bounded`], so a test that misses the
//! import, or a tokio-macros that stops honouring it, fails at once rather than unbounded.

use std::future::Future;
use std::time::Duration;

pub(crate) use ::tokio::*;

/// Upper bound for any single test.
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(60);

#[cfg_attr(
    windows,
    expect(
        clippy::missing_const_for_thread_local,
        reason = "Clippy for Windows targets says this const initializer misses its const: std's \
                  Windows thread_local expansion differs"
    )
)]
mod bounded {
    use std::cell::Cell;

    thread_local! {
        /// Set while a test body runs on this thread under [`super::TEST_LIMIT`].
        pub(super) static BOUNDED: Cell<bool> = const { Cell::new(false) };
    }
}
use bounded::BOUNDED;

/// Panics unless called from a test body running under the time limit.
pub(crate) fn assert_bounded() {
    assert!(
        BOUNDED.get(),
        "not under the test time limit: write `use crate::support::tokio;` in the test module"
    );
}

/// What `#[tokio::test]` calls: tokio's runtime builder, with a bounding `block_on`.
pub(crate) mod runtime {
    use super::{BOUNDED, Future, TEST_LIMIT};

    /// `tokio::runtime::Builder`, building a [`Runtime`] that bounds what it runs.
    pub(crate) struct Builder(::tokio::runtime::Builder);

    impl Builder {
        /// As tokio's (the only flavour the tests use).
        pub(crate) fn new_current_thread() -> Self {
            Builder(::tokio::runtime::Builder::new_current_thread())
        }

        /// As tokio's: timers and I/O.
        pub(crate) fn enable_all(mut self) -> Self {
            self.0.enable_all();
            self
        }

        /// As tokio's, wrapped.
        pub(crate) fn build(mut self) -> std::io::Result<Runtime> {
            self.0.build().map(Runtime)
        }
    }

    /// A current-thread runtime whose `block_on` gives up after [`TEST_LIMIT`].
    pub(crate) struct Runtime(::tokio::runtime::Runtime);

    impl Runtime {
        /// Runs `body` to completion; panics (fails the test) after [`TEST_LIMIT`].
        pub(crate) fn block_on<F: Future>(&self, body: F) -> F::Output {
            BOUNDED.set(true);
            // The timer exists only inside the runtime: create the timeout there.
            let outcome = self
                .0
                .block_on(async { ::tokio::time::timeout(TEST_LIMIT, body).await });
            BOUNDED.set(false);
            outcome.unwrap_or_else(|_| panic!("test exceeded its time limit of {TEST_LIMIT:?}"))
        }
    }
}
