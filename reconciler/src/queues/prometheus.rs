//! Prometheus: one instant query per level, `GET <url>/api/v1/query?query=<PromQL>`,
//! with an optional bearer token. Works with anything that speaks the same HTTP API
//! (Thanos, Mimir, VictoriaMetrics).
//!
//! The answer is an envelope: `{"status":"success","data":{"resultType":…,"result":…}}`
//! or `{"status":"error","errorType":…,"error":…}`, the latter with HTTP 400 (bad
//! parameters), 422 (the expression cannot be executed), 503 (timeout or abort) or 500
//! (`internal`). The error's `errorType` and text go into the pool error.
//!
//! A result becomes a count as follows:
//! - an instant vector: the sum of its samples' values (a query such as
//!   `ci_jobs_pending` may answer one series per label set); an empty vector is 0
//!   (nothing matched, which for a count of waiting jobs means none);
//! - a scalar: its value;
//! - `NaN`, `+Inf` and `-Inf` (Prometheus writes them as strings, JSON has none) are
//!   errors, not numbers: a division by zero in the query must not become 0 pending
//!   or a billion; so is a negative value, or a native-histogram sample;
//! - fractions (from `avg` or `rate`) are rounded to the nearest whole task.

use capstan_core::queue_source::PrometheusSource;
use serde_json::Value;

use super::{
    Adapter, AdapterError, Observation, QueueCredentials, Secret, endpoint_name, error_text,
    parse_json, quote, unreachable,
};

/// Polls a Prometheus server with one or two instant queries.
#[derive(Debug)]
pub struct PrometheusAdapter {
    url: String,
    endpoint: String,
    pending_query: String,
    running_query: Option<String>,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl PrometheusAdapter {
    /// An adapter for `source`; its `credentials` entry (if named) must hold `token`.
    pub fn new(
        source: &PrometheusSource,
        credentials: &QueueCredentials,
        http: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let token = match &source.credentials {
            Some(name) => Some(
                credentials
                    .secret(name, "token", |e| e.token.as_ref())?
                    .clone(),
            ),
            None => None,
        };
        let url = format!("{}/api/v1/query", source.url.trim_end_matches('/'));
        Ok(Self {
            endpoint: endpoint_name(&url),
            url,
            pending_query: source.pending_query.clone(),
            running_query: source.running_query.clone(),
            token,
            http,
        })
    }

    /// Runs one query and reduces its result to a count.
    async fn query(&self, which: &str, promql: &str) -> Result<u32, AdapterError> {
        let mut request = self.http.get(&self.url).query(&[("query", promql)]);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let endpoint = format!("{} ({which})", self.endpoint);
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&endpoint, &e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unreachable(&endpoint, &e))?;
        // Errors come as an envelope with a non-2xx status; a proxy in front may
        // answer something else entirely.
        let envelope = match parse_json(&endpoint, &body) {
            Ok(v) => v,
            Err(_) if !status.is_success() => {
                return Err(AdapterError::Status {
                    endpoint,
                    status: status.as_u16(),
                    detail: error_text(&body),
                });
            }
            Err(e) => return Err(e),
        };
        let bad = |detail: String| AdapterError::BadAnswer {
            endpoint: endpoint.clone(),
            detail,
        };
        match envelope.get("status").and_then(Value::as_str) {
            Some("success") if status.is_success() => {}
            Some("error") | Some("success") => {
                return Err(AdapterError::Status {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    detail: error_text(&body),
                });
            }
            _ => {
                return Err(bad(
                    "missing field status (expected \"success\" or \"error\")".into(),
                ));
            }
        }
        let data = envelope
            .get("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| {
                bad(format!(
                    "field data: expected {{resultType, result}}, got {}",
                    quote(
                        &envelope
                            .get("data")
                            .map(Value::to_string)
                            .unwrap_or_else(|| "nothing".into())
                    )
                ))
            })?;
        let result = data
            .get("result")
            .ok_or_else(|| bad("missing field data.result".into()))?;
        let value = match data.get("resultType").and_then(Value::as_str) {
            Some("vector") => {
                let samples = result
                    .as_array()
                    .ok_or_else(|| bad("field data.result: expected a list of samples".into()))?;
                let mut sum = 0.0;
                for (i, s) in samples.iter().enumerate() {
                    let value = s.get("value").ok_or_else(|| {
                        if s.get("histogram").is_some() {
                            bad(format!("data.result[{i}] is a native histogram, expected a number: wrap the query in a function that answers numbers"))
                        } else {
                            bad(format!("missing field data.result[{i}].value"))
                        }
                    })?;
                    sum += sample_value(value, &format!("data.result[{i}].value")).map_err(bad)?;
                }
                sum
            }
            Some("scalar") => sample_value(result, "data.result").map_err(bad)?,
            Some(other) => {
                return Err(bad(format!(
                    "the query answered a {other}, expected an instant vector or a scalar"
                )));
            }
            None => return Err(bad("missing field data.resultType".into())),
        };
        if !value.is_finite() {
            return Err(bad(format!("the query's value is {value}, not a count")));
        }
        if value < -0.5 {
            return Err(bad(format!(
                "the query's value is negative ({value}), not a count"
            )));
        }
        // Rounded, clamped to the u32 range: the cast saturates.
        Ok(value.round().max(0.0) as u32)
    }
}

/// The number in a `[<unix time>, "<value>"]` pair. Prometheus formats values with Go's
/// `strconv` (`NaN`, `+Inf`, `-Inf` for the special ones), which Rust parses as well.
fn sample_value(pair: &Value, path: &str) -> Result<f64, String> {
    let text = pair
        .as_array()
        .filter(|p| p.len() == 2)
        .and_then(|p| p[1].as_str())
        .ok_or_else(|| {
            format!(
                "field {path}: expected [<time>, \"<value>\"], got {}",
                quote(&pair.to_string())
            )
        })?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("field {path}: {text:?} is not a number"))?;
    if value.is_nan() {
        return Err(format!(
            "field {path} is NaN, not a count (a division by zero in the query?)"
        ));
    }
    if value.is_infinite() {
        return Err(format!("field {path} is {text}, not a count"));
    }
    Ok(value)
}

#[async_trait::async_trait]
impl Adapter for PrometheusAdapter {
    async fn poll(&self) -> Result<Observation, AdapterError> {
        let pending = self.query("pending_query", &self.pending_query).await?;
        let running = match &self.running_query {
            Some(q) => self.query("running_query", q).await?,
            None => 0,
        };
        Ok(Observation {
            pending,
            running,
            next_poll_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_values_reject_nan_and_infinities() {
        let v = |s: &str| sample_value(&serde_json::json!([1, s]), "v");
        assert_eq!(v("2.5"), Ok(2.5));
        assert_eq!(v("1e3"), Ok(1000.0));
        assert!(v("NaN").unwrap_err().contains("NaN"));
        assert!(v("+Inf").unwrap_err().contains("+Inf"));
        assert!(v("-Inf").unwrap_err().contains("-Inf"));
        assert!(v("many").unwrap_err().contains("not a number"));
        assert!(sample_value(&serde_json::json!([1, 2]), "v").is_err());
    }
}
