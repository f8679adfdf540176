//! What every phase of a run leans on: retrying transient failures
//! ([`RetryConfig`]), slowing down when a store asks to ([`Congestion`]),
//! and telling someone how far the run has got ([`Reporter`]).

mod progress;
mod retry;
mod throttle;

pub use progress::{Event, NoProgress, Operation, Progress, Reporter};
pub use retry::RetryConfig;
pub use throttle::Congestion;
