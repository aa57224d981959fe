//! The agent's side of the worker API (`/v1/workers`): register, heartbeat, report an
//! interruption.
//!
//! Every answer that is not a success becomes an [`ApiError`] classified by what the
//! agent does about it: [`ApiError::is_transient`] errors (no connection, 5xx, a
//! garbled answer) are retried with backoff; 401 on a heartbeat means the credential
//! was revoked; `not_leased` (a static machine nobody wants right now) comes with how
//! long to wait. The credential and the registration secrets go out only in request
//! bodies and the `Authorization` header, which is marked sensitive.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};

use super::bootstrap::Identity;
use super::metadata::Notice;
use super::slots::FinishedTask;
use capstan_core::secret::Secret;

/// How long one request to the server may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after `not_leased` when the server sends no usable `Retry-After`.
const DEFAULT_NOT_LEASED_WAIT: Duration = Duration::from_secs(30);

/// What the server answers a heartbeat with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Keep working.
    Continue,
    /// Stop taking work: the child gets SIGTERM, then SIGKILL after the grace.
    Drain,
    /// The machine is going away: stop the child and exit.
    Terminate,
}

/// A successful registration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The worker's id (for a static machine, the one the server chose).
    pub worker_id: String,
    /// The pool it serves.
    pub pool_id: String,
    /// The bearer credential for this worker's routes.
    pub credential: Secret,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a drained child may take before SIGKILL.
    pub drain_grace: Duration,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatReply {
    /// What to do.
    pub action: Action,
    /// The interval from now on, when the server says.
    pub heartbeat_interval: Option<Duration>,
}

/// A request the server did not grant.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach capstan at {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A 5xx, or a 2xx whose body is not what the contract says.
    #[error("capstan at {url} answered {status}: {message}")]
    Server {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's message, or what was wrong with its answer.
        message: String,
    },
    /// 401: the token, secret or credential is not (or no longer) valid.
    #[error("{message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// 409 `not_leased`: no worker wants this static machine right now.
    #[error("no worker wants this machine right now; registering again in {retry_after:?}")]
    NotLeased {
        /// How long to wait before registering again (`Retry-After`).
        retry_after: Duration,
    },
    /// Any other 4xx: 403 (not this worker's credential), 409 (token already used),
    /// 422 (malformed request).
    #[error("capstan refused {url} ({status} {code}): {message}")]
    Rejected {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error code from the body.
        code: String,
        /// The server's message.
        message: String,
    },
}

impl ApiError {
    /// Whether trying again later may succeed without anything changing here.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Unreachable { .. } | ApiError::Server { .. })
    }
}

/// A client of one capstan server's worker API.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    base: String,
    http: reqwest::Client,
}

impl WorkerApi {
    /// A client of the server at `base` (e.g. `http://capstan:8080`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The server's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/workers/register`.
    pub async fn register(&self, identity: &Identity) -> Result<Registration, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            worker_id: String,
            pool_id: String,
            credential: String,
            heartbeat_interval_s: f64,
            drain_grace_s: f64,
        }
        let body = match identity {
            Identity::Cloud {
                worker_id,
                registration_token,
            } => json!({"worker_id": worker_id, "registration_token": registration_token.expose()}),
            Identity::Static { machine, secret } => {
                json!({"machine": machine, "secret": secret.expose()})
            }
        };
        let url = format!("{}/v1/workers/register", self.base);
        let (status, retry_after, text) = self.post(&url, None, &body).await?;
        if status != StatusCode::OK {
            return Err(classify(url, status, retry_after, &text));
        }
        let answer: Answer = parse(&url, status, &text)?;
        Ok(Registration {
            worker_id: answer.worker_id,
            pool_id: answer.pool_id,
            credential: Secret::new(answer.credential),
            heartbeat_interval: seconds(answer.heartbeat_interval_s),
            drain_grace: seconds(answer.drain_grace_s),
        })
    }

    /// `POST /v1/workers/{id}/heartbeat`.
    pub async fn heartbeat(
        &self,
        registration: &Registration,
        busy_slots: u32,
        finished_tasks: &[FinishedTask],
    ) -> Result<HeartbeatReply, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            action: Action,
            heartbeat_interval_s: Option<f64>,
        }
        let body = if finished_tasks.is_empty() {
            json!({"busy_slots": busy_slots})
        } else {
            json!({"busy_slots": busy_slots, "finished_tasks": finished_tasks})
        };
        let url = format!(
            "{}/v1/workers/{}/heartbeat",
            self.base, registration.worker_id
        );
        let (status, retry_after, text) = self
            .post(&url, Some(&registration.credential), &body)
            .await?;
        if status != StatusCode::OK {
            return Err(classify(url, status, retry_after, &text));
        }
        let answer: Answer = parse(&url, status, &text)?;
        Ok(HeartbeatReply {
            action: answer.action,
            heartbeat_interval: answer.heartbeat_interval_s.map(seconds),
        })
    }

    /// `POST /v1/workers/{id}/interruption`; the server's answer (`drain`).
    pub async fn interruption(
        &self,
        registration: &Registration,
        notice: &Notice,
    ) -> Result<Action, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            action: Action,
        }
        let body = json!({"source": notice.source, "action": notice.action, "at": notice.at});
        let url = format!(
            "{}/v1/workers/{}/interruption",
            self.base, registration.worker_id
        );
        let (status, retry_after, text) = self
            .post(&url, Some(&registration.credential), &body)
            .await?;
        if !status.is_success() {
            return Err(classify(url, status, retry_after, &text));
        }
        let answer: Answer = parse(&url, status, &text)?;
        Ok(answer.action)
    }

    async fn post(
        &self,
        url: &str,
        credential: Option<&Secret>,
        body: &Value,
    ) -> Result<(StatusCode, Option<String>, String), ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            url: url.to_owned(),
            source,
        };
        let mut request = self.http.post(url).json(body);
        if let Some(credential) = credential {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", credential.expose()))
                .map_err(|_| ApiError::Rejected {
                    url: url.to_owned(),
                    status: 0,
                    code: "bad_credential".to_owned(),
                    message: "the credential capstan issued is not a valid header value".to_owned(),
                })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(unreachable)?;
        Ok((status, retry_after, text))
    }
}

/// A duration from the server's seconds; negative or NaN means zero.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

fn parse<T: serde::de::DeserializeOwned>(
    url: &str,
    status: StatusCode,
    text: &str,
) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::Server {
        url: url.to_owned(),
        status: status.as_u16(),
        message: format!("the answer does not follow the worker API contract: {e}"),
    })
}

/// Turns a non-success answer into the error the agent reacts to.
fn classify(url: String, status: StatusCode, retry_after: Option<String>, text: &str) -> ApiError {
    #[derive(Deserialize, Default)]
    struct Body {
        #[serde(default)]
        error: String,
        #[serde(default)]
        message: String,
    }
    let body: Body = serde_json::from_str(text).unwrap_or_default();
    let message = if body.message.is_empty() {
        text.chars().take(200).collect()
    } else {
        body.message
    };
    if status.is_server_error() {
        return ApiError::Server {
            url,
            status: status.as_u16(),
            message,
        };
    }
    if status == StatusCode::UNAUTHORIZED {
        return ApiError::Unauthorized { message };
    }
    if status == StatusCode::CONFLICT && body.error == "not_leased" {
        let retry_after = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_NOT_LEASED_WAIT, Duration::from_secs);
        return ApiError::NotLeased { retry_after };
    }
    ApiError::Rejected {
        url,
        status: status.as_u16(),
        code: body.error,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        "http://c/v1/workers/register".to_owned()
    }

    #[test]
    fn errors_are_classified_by_what_the_agent_does() {
        let e = classify(url(), StatusCode::SERVICE_UNAVAILABLE, None, "busy");
        assert!(e.is_transient(), "{e:?}");
        let e = classify(
            url(),
            StatusCode::UNAUTHORIZED,
            None,
            r#"{"error":"unauthorized","message":"worker w-1 is gone"}"#,
        );
        assert!(
            matches!(&e, ApiError::Unauthorized { message } if message == "worker w-1 is gone")
        );
        assert!(!e.is_transient());
        let e = classify(
            url(),
            StatusCode::CONFLICT,
            Some("7".into()),
            r#"{"error":"not_leased","message":"no worker wants rack1-07"}"#,
        );
        assert!(
            matches!(e, ApiError::NotLeased { retry_after } if retry_after == Duration::from_secs(7))
        );
        let e = classify(
            url(),
            StatusCode::CONFLICT,
            None,
            r#"{"error":"conflict","message":"registration token already used"}"#,
        );
        assert!(e.to_string().contains("already used"), "{e}");
        assert!(!e.is_transient());
    }

    #[test]
    fn not_leased_without_a_usable_retry_after_waits_the_default() {
        let e = classify(
            url(),
            StatusCode::CONFLICT,
            Some("soon".into()),
            r#"{"error":"not_leased"}"#,
        );
        assert!(
            matches!(e, ApiError::NotLeased { retry_after } if retry_after == DEFAULT_NOT_LEASED_WAIT)
        );
    }

    #[test]
    fn server_seconds() {
        assert_eq!(seconds(15.0), Duration::from_secs(15));
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
    }
}
