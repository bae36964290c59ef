//! How a task of the pool failed (DESIGN §8).

use serde::{Deserialize, Serialize};

/// Why a task of a pool gave no result.
///
/// ```
/// use netmcore_shared::TaskFailure;
///
/// let failure = TaskFailure::Panicked("index out of bounds".to_owned());
/// assert_eq!(failure.to_string(), "the task panicked: index out of bounds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFailure {
    /// The task's body panicked, with this message; its worker went on with other tasks.
    #[error("the task panicked: {0}")]
    Panicked(String),
    /// The worker process died while running the task (killed, a crash, an exit), and so did
    /// the one retry on another worker; the string says how the last one ended.
    #[error("the worker died in the task: {0}")]
    Died(String),
    /// The item, or the task's result, is larger encoded than a message of the pool; the
    /// string says which and how large.
    #[error("too large for the pool: {0}")]
    TooLarge(String),
}

#[cfg(test)]
mod tests {
    use netmcore_encap::Encap;

    use super::*;

    #[test]
    fn failures_display_and_round_trip() {
        let died = TaskFailure::Died("killed by SIGKILL".to_owned());
        assert_eq!(
            died.to_string(),
            "the worker died in the task: killed by SIGKILL"
        );
        for failure in [died, TaskFailure::Panicked("boom".to_owned())] {
            let back: TaskFailure = Encap::wrap(&failure)
                .expect("wraps")
                .unwrap()
                .expect("unwraps");
            assert_eq!(back, failure);
        }
    }
}
