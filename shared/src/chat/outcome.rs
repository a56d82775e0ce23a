//! How the worker settled one queued job: what the reply function reports to the queue
//! and the metrics count. Below both the worker and `telemetry::metrics`.

/// The job is finished (the queue record can be deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Blocked,
    /// Marked `failed`; retrying cannot help.
    Failed(String),
    /// Nothing to do: unknown message, or already processed (a redelivery).
    Skipped(&'static str),
}
