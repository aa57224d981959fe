//! The cloud's instance metadata service: the user-data the agent bootstraps from and
//! the interruption notice it watches.
//!
//! - EC2 (IMDSv2): every read carries a session token from `PUT /latest/api/token`
//!   (`X-aws-ec2-metadata-token-ttl-seconds: 21600`) in `X-aws-ec2-metadata-token`.
//!   The token is kept and reused; a 401 (expired or unknown token) fetches a new one
//!   and retries once. User-data is `GET /latest/user-data`; the spot notice is `GET
//!   /latest/meta-data/spot/instance-action`, 404 until AWS schedules the interruption,
//!   then `{"action": "terminate" | "stop" | "hibernate", "time": "<RFC 3339>"}`.
//! - GCE: every read carries `Metadata-Flavor: Google`. User-data is the attribute
//!   `capstan-user-data`; the notice is `GET /computeMetadata/v1/instance/preempted`,
//!   `FALSE` until the instance is preempted, then `TRUE`. The agent polls it rather
//!   than holding a `wait_for_change` request open, so one loop serves both clouds.
//!
//! The base URL (`http://169.254.169.254`, `http://metadata.google.internal`) is
//! configurable so tests can point the agent at a stub.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use capstan_core::secret::Secret;

/// How long one metadata request may take; the service is link-local and fast.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The IMDSv2 session token lifetime asked for: the maximum, six hours.
const IMDS_TOKEN_TTL_S: &str = "21600";

/// Which cloud's metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// AWS EC2, IMDSv2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl Cloud {
    /// The metadata service's address on a real instance.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Cloud::Ec2 => "http://169.254.169.254",
            Cloud::Gce => "http://metadata.google.internal",
        }
    }

    /// The `source` of an interruption report, and a name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Ec2 => "ec2",
            Cloud::Gce => "gce",
        }
    }

    /// Where the user-data came from, for error messages.
    pub fn user_data_origin(self) -> &'static str {
        match self {
            Cloud::Ec2 => "EC2 user-data",
            Cloud::Gce => "GCE metadata `capstan-user-data`",
        }
    }
}

/// The cloud said this instance is about to be taken away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `ec2` or `gce`.
    pub source: &'static str,
    /// `terminate`, `stop` or `hibernate` (EC2), `preempted` (GCE).
    pub action: String,
    /// When the cloud will act (EC2's `time`), if it said.
    pub at: Option<String>,
}

/// A metadata read that failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// No answer (connection refused, timeout).
    #[error("cannot reach the instance metadata service at {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than the ones expected.
    #[error("instance metadata {url} answered {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body, shortened.
        body: String,
    },
    /// A 200 whose body is not what the service documents.
    #[error("instance metadata {url}: {detail}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// A client of one instance's metadata service.
#[derive(Debug)]
pub struct Metadata {
    cloud: Cloud,
    base: String,
    http: reqwest::Client,
    /// The IMDSv2 session token (EC2 only), fetched on first use.
    imds_token: Mutex<Option<Secret>>,
}

impl Metadata {
    /// A client of `cloud`'s metadata service at `base` (no trailing slash needed).
    pub fn new(cloud: Cloud, base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The metadata service is never behind a proxy; an HTTP_PROXY meant for
            // the worker's downloads must not capture it.
            .no_proxy()
            .build()?;
        Ok(Self {
            cloud,
            base: base.trim_end_matches('/').to_owned(),
            http,
            imds_token: Mutex::new(None),
        })
    }

    /// Which cloud.
    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// The instance's capstan user-data, as text.
    pub async fn user_data(&self) -> Result<String, MetadataError> {
        let path = match self.cloud {
            Cloud::Ec2 => "/latest/user-data".to_owned(),
            Cloud::Gce => format!(
                "/computeMetadata/v1/instance/attributes/{}",
                providers::gcp::METADATA_USER_DATA
            ),
        };
        let (url, status, body) = self.get(&path).await?;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::NOT_FOUND => Err(MetadataError::BadAnswer {
                url,
                detail: "the instance has no capstan user-data (404); was it launched by \
                         capstan? A static machine uses --bootstrap file:PATH"
                    .to_owned(),
            }),
            _ => Err(status_error(url, status, &body)),
        }
    }

    /// The interruption notice, if the cloud has posted one.
    pub async fn interruption(&self) -> Result<Option<Notice>, MetadataError> {
        match self.cloud {
            Cloud::Ec2 => {
                let (url, status, body) =
                    self.get("/latest/meta-data/spot/instance-action").await?;
                match status {
                    StatusCode::NOT_FOUND => Ok(None),
                    StatusCode::OK => parse_spot_action(&body)
                        .map(Some)
                        .map_err(|detail| MetadataError::BadAnswer { url, detail }),
                    _ => Err(status_error(url, status, &body)),
                }
            }
            Cloud::Gce => {
                let (url, status, body) =
                    self.get("/computeMetadata/v1/instance/preempted").await?;
                if status != StatusCode::OK {
                    return Err(status_error(url, status, &body));
                }
                parse_preempted(&body).map_err(|detail| MetadataError::BadAnswer { url, detail })
            }
        }
    }

    /// `GET base+path` the way the cloud wants it: (url, status, body).
    async fn get(&self, path: &str) -> Result<(String, StatusCode, String), MetadataError> {
        let url = format!("{}{path}", self.base);
        match self.cloud {
            Cloud::Gce => {
                let request = self.http.get(&url).header("Metadata-Flavor", "Google");
                let (status, body) = send(&url, request).await?;
                Ok((url, status, body))
            }
            Cloud::Ec2 => {
                let mut refresh = false;
                loop {
                    let token = self.imds_token(refresh).await?;
                    let request = self
                        .http
                        .get(&url)
                        .header("X-aws-ec2-metadata-token", token.expose());
                    let (status, body) = send(&url, request).await?;
                    if status == StatusCode::UNAUTHORIZED && !refresh {
                        tracing::info!("the IMDSv2 session token was refused; fetching a new one");
                        refresh = true;
                        continue;
                    }
                    return Ok((url, status, body));
                }
            }
        }
    }

    /// The IMDSv2 session token: the kept one, or a new one when `refresh` or none.
    async fn imds_token(&self, refresh: bool) -> Result<Secret, MetadataError> {
        let mut kept = self.imds_token.lock().await;
        if let (Some(token), false) = (kept.as_ref(), refresh) {
            return Ok(token.clone());
        }
        let url = format!("{}/latest/api/token", self.base);
        let request = self
            .http
            .request(Method::PUT, &url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_S);
        let (status, body) = send(&url, request).await?;
        if status != StatusCode::OK || body.trim().is_empty() {
            return Err(status_error(url, status, &body));
        }
        let token = Secret::new(body.trim());
        *kept = Some(token.clone());
        Ok(token)
    }
}

async fn send(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, String), MetadataError> {
    let unreachable = |source| MetadataError::Unreachable {
        url: url.to_owned(),
        source,
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    Ok((status, body))
}

fn status_error(url: String, status: StatusCode, body: &str) -> MetadataError {
    MetadataError::Status {
        url,
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    }
}

/// Parses EC2's `spot/instance-action` document.
pub fn parse_spot_action(body: &str) -> Result<Notice, String> {
    #[derive(Deserialize)]
    struct InstanceAction {
        action: String,
        time: Option<String>,
    }
    let parsed: InstanceAction = serde_json::from_str(body)
        .map_err(|e| format!("spot/instance-action is not {{\"action\": …, \"time\": …}}: {e}"))?;
    let action = parsed.action.to_ascii_lowercase();
    if !matches!(action.as_str(), "terminate" | "stop" | "hibernate") {
        return Err(format!(
            "spot/instance-action: expected action terminate, stop or hibernate, found {:?}",
            parsed.action
        ));
    }
    Ok(Notice {
        source: Cloud::Ec2.name(),
        action,
        at: parsed.time,
    })
}

/// Parses GCE's `instance/preempted` answer (`TRUE` or `FALSE`).
pub fn parse_preempted(body: &str) -> Result<Option<Notice>, String> {
    match body.trim() {
        "TRUE" => Ok(Some(Notice {
            source: Cloud::Gce.name(),
            action: "preempted".to_owned(),
            at: None,
        })),
        "FALSE" => Ok(None),
        other => Err(format!(
            "instance/preempted: expected TRUE or FALSE, found {:?}",
            other.chars().take(40).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_action_documents() {
        let notice =
            parse_spot_action(r#"{"action": "terminate", "time": "2026-11-30T10:00:00Z"}"#)
                .unwrap();
        assert_eq!(
            notice,
            Notice {
                source: "ec2",
                action: "terminate".into(),
                at: Some("2026-11-30T10:00:00Z".into()),
            }
        );
        assert_eq!(
            parse_spot_action(r#"{"action":"Stop"}"#).unwrap().action,
            "stop"
        );
        assert!(
            parse_spot_action(r#"{"action":"reboot"}"#)
                .unwrap_err()
                .contains("\"reboot\"")
        );
        assert!(parse_spot_action("<html>").is_err());
    }

    #[test]
    fn preempted_answers() {
        assert_eq!(parse_preempted("FALSE"), Ok(None));
        let notice = parse_preempted("TRUE\n").unwrap().unwrap();
        assert_eq!(
            (notice.source, notice.action.as_str(), notice.at),
            ("gce", "preempted", None)
        );
        assert!(parse_preempted("yes").is_err());
    }
}
