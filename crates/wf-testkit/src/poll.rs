//! Waiting for asynchronous state: poll with a deadline, and when it passes, fail naming
//! what was awaited (and why it was not there yet), never hang and never sleep "long
//! enough".

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] asks again: often enough not to slow a test down, rarely
/// enough not to load the services it polls on a small machine.
const INTERVAL: Duration = Duration::from_millis(50);

/// What one poll of [`eventually`] found: done (with a value), or not yet (with an
/// explanation when there is one).
pub trait Check {
    /// What `eventually` returns once the check passes.
    type Output;
    /// `Ok` when done; `Err` with what is still missing, if the check can say.
    fn check(self) -> Result<Self::Output, Option<String>>;
}

impl Check for bool {
    type Output = ();
    fn check(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err(why)` is "not yet, because why": the last `why` is shown when time runs out.
impl<T, E: Display> Check for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Polls `f` until its check passes (`true`, `Some(v)`, `Ok(v)`) and returns the value;
/// panics naming `what` (and the last reason it gave) after `timeout`.
///
/// Uses tokio's clock, so it also works under a paused clock.
pub async fn eventually<C, F, Fut>(what: &str, timeout: Duration, mut f: F) -> C::Output
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let why = match f().await.check() {
            Ok(v) => return v,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            match why {
                Some(why) => panic!("timed out after {timeout:?} waiting for: {what}\n{why}"),
                None => panic!("timed out after {timeout:?} waiting for: {what}"),
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Awaits `fut` for at most `timeout`; panics naming `what` when it takes longer.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_check_passes() {
        let calls = AtomicU32::new(0);
        let got = eventually("the third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, 3);
        eventually("a bool", Duration::from_secs(1), || async { true }).await;
        let ok: u8 = eventually("a result", Duration::from_secs(1), || async {
            Ok::<_, String>(7)
        })
        .await;
        assert_eq!(ok, 7);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for: the impossible\n3 of 4 settled")]
    async fn panics_with_what_and_the_last_reason() {
        eventually("the impossible", Duration::from_secs(2), || async {
            Err::<(), _>("3 of 4 settled")
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s: a future that never ends")]
    async fn within_names_what_took_too_long() {
        within(
            "a future that never ends",
            Duration::from_secs(1),
            std::future::pending::<()>(),
        )
        .await;
    }
}
