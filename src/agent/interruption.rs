//! Watching the cloud's interruption notice and telling capstan, once.
//!
//! [`watch_and_report`] polls the metadata service every `poll` until the notice
//! appears (EC2 spot `instance-action`, GCE `preempted`), then posts it to `POST
//! /v1/workers/{id}/interruption` until the server accepts it, so the service can
//! launch the replacement while this machine still runs. It returns the server's
//! answer (`drain`) and stops: a notice is reported exactly once per registration.
//! Metadata errors are logged when they start and when they stop, not on every poll.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use super::metadata::Metadata;
use super::worker_api::{Action, ApiError, Registration, WorkerApi};

/// Polls for the notice, reports it, and returns what the server answered.
pub async fn watch_and_report(
    metadata: Arc<Metadata>,
    api: WorkerApi,
    registration: Registration,
    poll: Duration,
) -> Result<Action, ApiError> {
    let source = metadata.cloud().name();
    let mut failing = false;
    let notice = loop {
        match metadata.interruption().await {
            Ok(Some(notice)) => break notice,
            Ok(None) => {
                if failing {
                    tracing::info!(source, "the interruption notice can be read again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(source, error = %e, "cannot read the interruption notice; still polling");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(poll).await;
    };
    tracing::warn!(
        source = notice.source,
        action = %notice.action,
        at = notice.at.as_deref().unwrap_or("unknown"),
        "the cloud is taking this machine away; reporting the interruption to capstan"
    );
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match api.interruption(&registration, &notice).await {
            Ok(action) => {
                tracing::info!(answer = ?action, "capstan accepted the interruption report");
                return Ok(action);
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_s = delay.as_secs_f64(), "cannot report the interruption; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}
