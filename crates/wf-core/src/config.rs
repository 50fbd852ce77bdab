//! Configuration from `WF_*` variables (SPEC §2). Written by the config helper.

/// Queue type for the declared queues (`WF_QUEUE_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Quorum,
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}
