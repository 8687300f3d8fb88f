//! The back-off of every retry loop of the engine (docs/failures.md): the first retry after
//! 200 ms, each next one twice as late, never more than 30 s apart.

use std::time::Duration;

/// The first wait.
const FIRST: Duration = Duration::from_millis(200);
/// The longest wait.
const MAX: Duration = Duration::from_secs(30);

/// The waits between the attempts of one retried step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The wait before the next attempt (the one after it doubles, up to 30 s).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_200_ms_up_to_30_s() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..11).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000]
        );
    }
}
