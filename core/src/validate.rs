//! Reading a pool spec from untrusted text, reporting every problem at once.
//!
//! serde alone stops at the first error. An operator who fixes one field, resubmits and
//! learns about the next wastes everyone's time, so decoding walks the document field
//! by field: each field is decoded on its own, each rule is checked where the field is
//! read, and every problem is collected as a [`FieldError`] naming the field's path
//! (`launch_configs[2].capacity`) and what was expected. Unknown fields are errors, not
//! ignored: a typo such as `max_capcity` must never silently fall back to a default.
//!
//! The rules live only here. [`PoolSpec::validate`] re-checks a spec built in code by
//! running it through the same decoder, so there is one set of rules, not two.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::id::{check_id, check_pool_id};
use crate::queue_source::{
    self, BuildkiteSource, GithubSource, PrometheusSource, QueueSource, TaskclusterSource,
};
use crate::spec::{
    Budget, LaunchConfig, Lifecycle, PoolSpec, ProviderKind, Scaling, ScalingPolicy, Schedule,
};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path of the field, e.g. `launch_configs[2].capacity`; empty for the document.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in a spec; never empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    /// One line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    fn document(message: String) -> Self {
        Self(vec![FieldError {
            field: String::new(),
            message,
        }])
    }
}

impl PoolSpec {
    /// Parses and validates a spec written in YAML (JSON is valid YAML too).
    pub fn from_yaml(text: &str) -> Result<PoolSpec, SpecErrors> {
        let value: Value = serde_norway::from_str(text)
            .map_err(|e| SpecErrors::document(format!("not valid YAML: {e}")))?;
        Self::from_value(value)
    }

    /// Parses and validates a spec written in JSON.
    pub fn from_json(text: &str) -> Result<PoolSpec, SpecErrors> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SpecErrors::document(format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Validates an already-parsed document and builds the spec from it.
    pub fn from_value(value: Value) -> Result<PoolSpec, SpecErrors> {
        let mut errors = Vec::new();
        let spec = decode_pool(value, &mut errors);
        match spec {
            Some(spec) if errors.is_empty() => Ok(spec),
            _ => Err(SpecErrors(errors)),
        }
    }

    /// Checks a spec built in code against the same rules as [`PoolSpec::from_value`].
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let value = serde_json::to_value(self)
            .map_err(|e| SpecErrors::document(format!("cannot be represented: {e}")))?;
        Self::from_value(value).map(|_| ())
    }
}

/// A JSON object being decoded field by field. Fields are removed as they are read;
/// whatever is left at [`Object::finish`] is unknown.
struct Object<'e> {
    path: String,
    map: Map<String, Value>,
    known: &'static [&'static str],
    errors: &'e mut Vec<FieldError>,
}

impl<'e> Object<'e> {
    fn open(
        value: Value,
        path: String,
        known: &'static [&'static str],
        errors: &'e mut Vec<FieldError>,
    ) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                path,
                map,
                known,
                errors,
            }),
            other => {
                errors.push(FieldError {
                    field: path,
                    message: format!("expected a mapping of fields, got {}", describe(&other)),
                });
                None
            }
        }
    }

    fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn error(&mut self, field: String, message: impl Into<String>) {
        self.errors.push(FieldError {
            field,
            message: message.into(),
        });
    }

    /// The raw value of `name`; `null` counts as absent.
    fn raw(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// Decodes optional field `name`: `Ok(None)` when absent, `Err(())` when present
    /// but wrong (the error is recorded).
    fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ()> {
        let Some(value) = self.raw(name) else {
            return Ok(None);
        };
        match serde_json::from_value::<T>(value.clone()) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let field = self.path_of(name);
                self.error(field, type_message(&e, &value));
                Err(())
            }
        }
    }

    /// Decodes required field `name`; `None` (with the error recorded) when absent or
    /// wrong.
    fn required<T: DeserializeOwned>(&mut self, name: &str, what: &str) -> Option<T> {
        match self.optional(name) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                let field = self.path_of(name);
                self.error(field, format!("required: {what}"));
                None
            }
            Err(()) => None,
        }
    }

    /// Decodes field `name` or takes `default` when absent; `None` when wrong.
    fn or<T: DeserializeOwned>(&mut self, name: &str, default: T) -> Option<T> {
        self.optional(name).ok().map(|v| v.unwrap_or(default))
    }

    /// Decodes `idle_timeout_s`: absent or `null` means capstan chooses it (`None`);
    /// otherwise a whole number of seconds. `None` (with the error recorded) when wrong.
    fn idle_timeout_s(&mut self) -> Option<Option<u64>> {
        const NAME: &str = "idle_timeout_s";
        let Some(value) = self.raw(NAME) else {
            return Some(None);
        };
        match serde_json::from_value::<u64>(value.clone()) {
            Ok(v) => Some(Some(v)),
            Err(_) => {
                let field = self.path_of(NAME);
                self.error(
                    field,
                    format!(
                        "expected a whole number of seconds (>= 0), or leave it out for capstan to choose, got {}",
                        describe(&value)
                    ),
                );
                None
            }
        }
    }

    /// Runs `rule` on a decoded value; records its complaint against `name`.
    fn check<T>(
        &mut self,
        name: &str,
        value: Option<T>,
        rule: impl FnOnce(&T) -> Result<(), String>,
    ) -> Option<T> {
        let value = value?;
        match rule(&value) {
            Ok(()) => Some(value),
            Err(message) => {
                let field = self.path_of(name);
                self.error(field, message);
                None
            }
        }
    }

    /// Reports the fields nobody asked for.
    fn finish(self) {
        let expected = self.known.join(", ");
        let mut unknown: Vec<String> = self.map.into_iter().map(|(k, _)| k).collect();
        unknown.sort();
        for name in unknown {
            let field = if self.path.is_empty() {
                name
            } else {
                format!("{}.{name}", self.path)
            };
            self.errors.push(FieldError {
                field,
                message: format!("unknown field; expected one of: {expected}"),
            });
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Turns serde's type-error wording into the words of the spec reference.
fn type_message(e: &serde_json::Error, value: &Value) -> String {
    let msg = e.to_string();
    if let Some(idx) = msg.find("expected ") {
        let expected = &msg[idx + "expected ".len()..];
        let expected = match expected {
            "u32" => "a whole number from 0 to 4294967295".to_owned(),
            "u64" => "a whole number >= 0".to_owned(),
            "i32" => "a whole number".to_owned(),
            "f64" => "a number".to_owned(),
            "a string" | "a sequence" | "a map" => expected.to_owned(),
            other => other.to_owned(),
        };
        if msg.starts_with("unknown variant") {
            return format!("got {}, expected {expected}", describe(value));
        }
        return format!("expected {expected}, got {}", describe(value));
    }
    msg
}

fn at_least<T: PartialOrd + fmt::Display + Copy>(min: T) -> impl FnOnce(&T) -> Result<(), String> {
    move |v| {
        if *v >= min {
            Ok(())
        } else {
            Err(format!("must be >= {min}, got {v}"))
        }
    }
}

/// Slots a part of the pool may hold at most: the pool's `max_capacity`, when it was
/// read.
fn within_pool_max(pool_max: Option<u32>) -> impl FnOnce(&u32) -> Result<(), String> {
    move |v| match pool_max {
        Some(max) if *v > max => Err(format!(
            "must be <= the pool's max_capacity ({max}), got {v}"
        )),
        _ => Ok(()),
    }
}

fn finite_non_negative(v: &f64) -> Result<(), String> {
    if v.is_finite() && *v >= 0.0 {
        Ok(())
    } else {
        Err(format!("must be a number >= 0, got {v}"))
    }
}

fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

fn valid_id(v: &str) -> Result<(), String> {
    check_id(v).map_err(|e| e.to_string())
}

const POOL_FIELDS: &[&str] = &[
    "id",
    "description",
    "provider",
    "min_capacity",
    "max_capacity",
    "launch_configs",
    "scaling",
    "lifecycle",
    "schedules",
    "budget",
    "queue",
];

fn decode_pool(value: Value, errors: &mut Vec<FieldError>) -> Option<PoolSpec> {
    let mut o = Object::open(value, String::new(), POOL_FIELDS, errors)?;

    let id = o.required::<String>("id", "the pool's id, e.g. ci/linux-large");
    let id = o.check("id", id, |v| check_pool_id(v).map_err(|e| e.to_string()));
    let description = o.or("description", String::new());
    let provider = o.required::<ProviderKind>("provider", "one of aws, gcp, static, fake");
    let min_capacity = o.or("min_capacity", 0u32);
    let max_capacity = o.required::<u32>("max_capacity", "the most task slots the pool may hold");
    if let (Some(min), Some(max)) = (min_capacity, max_capacity)
        && min > max
    {
        o.error(
            "min_capacity".into(),
            format!("must be <= max_capacity ({max}), got {min}"),
        );
    }

    let launch_configs = match o.optional::<Vec<Value>>("launch_configs") {
        Ok(items) => {
            let items = items.unwrap_or_default();
            if items.is_empty()
                && let Some(p) = provider
                && p.launches_machines()
            {
                o.error(
                    "launch_configs".into(),
                    format!("at least one launch config is required for provider {p}"),
                );
            }
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("launch_configs[{i}]");
                match decode_launch_config(item, path.clone(), provider, o.errors) {
                    Some(lc) => {
                        if let Some(first) = seen.insert(lc.id.clone(), i) {
                            o.error(
                                format!("{path}.id"),
                                format!("duplicate of launch_configs[{first}].id {:?}", lc.id),
                            );
                            ok = false;
                        }
                        out.push(lc);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        Err(()) => None,
    };

    let scaling = match o.raw("scaling") {
        Some(v) => decode_scaling(v, o.path_of("scaling"), max_capacity, o.errors),
        None => Some(Scaling::default()),
    };
    let lifecycle = match o.raw("lifecycle") {
        Some(v) => decode_lifecycle(v, o.path_of("lifecycle"), o.errors),
        None => Some(Lifecycle::default()),
    };
    let schedules = match o.optional::<Vec<Value>>("schedules") {
        Ok(items) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
                match decode_schedule(item, format!("schedules[{i}]"), max_capacity, o.errors) {
                    Some(s) => out.push(s),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        Err(()) => None,
    };
    let budget = match o.raw("budget") {
        Some(v) => decode_budget(v, o.path_of("budget"), o.errors).map(Some),
        None => Some(None),
    };
    let queue = match o.raw("queue") {
        Some(v) => decode_queue(v, o.path_of("queue"), o.errors).map(Some),
        None => Some(None),
    };
    o.finish();

    Some(PoolSpec {
        id: crate::PoolId::new(id?).ok()?,
        description: description?,
        provider: provider?,
        min_capacity: min_capacity?,
        max_capacity: max_capacity?,
        launch_configs: launch_configs?,
        scaling: scaling?,
        lifecycle: lifecycle?,
        schedules: schedules?,
        budget: budget?,
        queue: queue?,
    })
}

const LAUNCH_CONFIG_FIELDS: &[&str] = &[
    "id",
    "region",
    "zone",
    "instance_type",
    "market",
    "capacity",
    "priority",
    "max_capacity",
    "price_per_hour",
    "provider_config",
];

fn decode_launch_config(
    value: Value,
    path: String,
    provider: Option<ProviderKind>,
    errors: &mut Vec<FieldError>,
) -> Option<LaunchConfig> {
    let mut o = Object::open(value, path, LAUNCH_CONFIG_FIELDS, errors)?;
    let id = o.required::<String>("id", "a name unique within the pool");
    let id = o.check("id", id, |v| valid_id(v));
    let region = o.or("region", String::new());
    let region = o.check("region", region, |r| match provider {
        Some(p @ (ProviderKind::Aws | ProviderKind::Gcp)) if r.trim().is_empty() => {
            Err(format!("required for provider {p}"))
        }
        _ => Ok(()),
    });
    let zone = o.optional::<String>("zone").ok();
    let zone = o.check("zone", zone, |z| match (provider, z) {
        (Some(ProviderKind::Gcp), None) => {
            Err("required for provider gcp: Compute Engine instances are zonal".into())
        }
        (_, Some(z)) => non_empty(z),
        _ => Ok(()),
    });
    let instance_type = o.required::<String>("instance_type", "a machine type, e.g. c6i.2xlarge");
    let instance_type = o.check("instance_type", instance_type, |v| non_empty(v));
    let market = o.or("market", crate::Market::OnDemand);
    let capacity = o.or("capacity", 1u32);
    let capacity = o.check("capacity", capacity, at_least(1));
    let priority = o.or("priority", 0i32);
    let max_capacity = o.optional::<u32>("max_capacity").ok();
    let max_capacity = o.check("max_capacity", max_capacity, |m| match (m, capacity) {
        (Some(m), Some(c)) if *m < c => Err(format!(
            "must be >= capacity ({c}) so that one instance fits, got {m}"
        )),
        _ => Ok(()),
    });
    let price = o.optional::<f64>("price_per_hour").ok();
    let price = o.check("price_per_hour", price, |p| match p {
        Some(p) => finite_non_negative(p),
        None => Ok(()),
    });
    let provider_config = o.or("provider_config", Map::new());
    o.finish();
    Some(LaunchConfig {
        id: id?,
        region: region?,
        zone: zone?,
        instance_type: instance_type?,
        market: market?,
        capacity: capacity?,
        priority: priority?,
        max_capacity: max_capacity?,
        price_per_hour: price?,
        provider_config: provider_config?,
    })
}

const SCALING_FIELDS: &[&str] = &[
    "policy",
    "target_wait_s",
    "service_level",
    "scaling_ratio",
    "idle_timeout_s",
    "warm_slots",
    "max_launches_per_minute",
    "dry_run",
];

fn decode_scaling(
    value: Value,
    path: String,
    pool_max: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> Option<Scaling> {
    let d = Scaling::default();
    let mut o = Object::open(value, path, SCALING_FIELDS, errors)?;
    let policy = o.or::<ScalingPolicy>("policy", d.policy);
    let target_wait_s = o.or("target_wait_s", d.target_wait_s);
    let service_level = o.or("service_level", d.service_level);
    let service_level = o.check("service_level", service_level, |s| {
        if *s >= 0.0 && *s < 1.0 {
            Ok(())
        } else {
            Err(format!("must be at least 0 and below 1, got {s}"))
        }
    });
    let scaling_ratio = o.or("scaling_ratio", d.scaling_ratio);
    let scaling_ratio = o.check("scaling_ratio", scaling_ratio, |r| {
        if r.is_finite() && *r > 0.0 && *r <= 100.0 {
            Ok(())
        } else {
            Err(format!("must be > 0 and <= 100, got {r}"))
        }
    });
    let idle_timeout_s = o.idle_timeout_s();
    let warm_slots = o.or("warm_slots", d.warm_slots);
    let warm_slots = o.check("warm_slots", warm_slots, within_pool_max(pool_max));
    let max_launches = o.or("max_launches_per_minute", d.max_launches_per_minute);
    let max_launches = o.check("max_launches_per_minute", max_launches, at_least(1));
    let dry_run = o.or("dry_run", d.dry_run);
    o.finish();
    Some(Scaling {
        policy: policy?,
        target_wait_s: target_wait_s?,
        service_level: service_level?,
        scaling_ratio: scaling_ratio?,
        idle_timeout_s: idle_timeout_s?,
        warm_slots: warm_slots?,
        max_launches_per_minute: max_launches?,
        dry_run: dry_run?,
    })
}

const LIFECYCLE_FIELDS: &[&str] = &[
    "registration_timeout_s",
    "heartbeat_timeout_s",
    "max_lifetime_s",
];

fn decode_lifecycle(value: Value, path: String, errors: &mut Vec<FieldError>) -> Option<Lifecycle> {
    let d = Lifecycle::default();
    let mut o = Object::open(value, path, LIFECYCLE_FIELDS, errors)?;
    let registration = o.or("registration_timeout_s", d.registration_timeout_s);
    let registration = o.check("registration_timeout_s", registration, at_least(1));
    let heartbeat = o.or("heartbeat_timeout_s", d.heartbeat_timeout_s);
    let heartbeat = o.check("heartbeat_timeout_s", heartbeat, at_least(1));
    let max_lifetime = o.optional::<u64>("max_lifetime_s").ok();
    let max_lifetime = o.check("max_lifetime_s", max_lifetime, |m| match m {
        Some(m) if *m < 60 => Err(format!("must be >= 60 seconds, got {m}")),
        _ => Ok(()),
    });
    o.finish();
    Some(Lifecycle {
        registration_timeout_s: registration?,
        heartbeat_timeout_s: heartbeat?,
        max_lifetime_s: max_lifetime?,
    })
}

const SCHEDULE_FIELDS: &[&str] = &["cron", "timezone", "duration_s", "min_capacity"];

fn decode_schedule(
    value: Value,
    path: String,
    pool_max: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> Option<Schedule> {
    let mut o = Object::open(value, path, SCHEDULE_FIELDS, errors)?;
    let cron = o.required::<String>("cron", "a cron expression, e.g. \"0 8 * * 1-5\"");
    let cron = o.check("cron", cron, |c| crate::schedule::parse_cron(c).map(|_| ()));
    let timezone = o.or("timezone", "UTC".to_owned());
    let timezone = o.check("timezone", timezone, |tz| {
        chrono_tz::Tz::from_str(tz).map(|_| ()).map_err(|_| {
            format!("unknown IANA time zone {tz:?}; expected e.g. \"Europe/Berlin\" or \"UTC\"")
        })
    });
    let duration = o.required::<u64>("duration_s", "how long each window stays open, in seconds");
    let duration = o.check("duration_s", duration, |d| {
        if (1..=31 * 86_400).contains(d) {
            Ok(())
        } else {
            Err(format!("must be between 1 and 2678400 (31 days), got {d}"))
        }
    });
    let min_capacity = o.required::<u32>(
        "min_capacity",
        "the floor on slots while the window is open",
    );
    let min_capacity = o.check("min_capacity", min_capacity, within_pool_max(pool_max));
    o.finish();
    Some(Schedule {
        cron: cron?,
        timezone: timezone?,
        duration_s: duration?,
        min_capacity: min_capacity?,
    })
}

fn decode_budget(value: Value, path: String, errors: &mut Vec<FieldError>) -> Option<Budget> {
    let mut o = Object::open(value, path, &["max_cost_per_hour"], errors)?;
    let max = o.required::<f64>("max_cost_per_hour", "a number > 0");
    let max = o.check("max_cost_per_hour", max, |m| {
        if m.is_finite() && *m > 0.0 {
            Ok(())
        } else {
            Err(format!("must be > 0, got {m}"))
        }
    });
    o.finish();
    Some(Budget {
        max_cost_per_hour: max?,
    })
}

const QUEUE_KINDS: &str = "one of taskcluster, buildkite, prometheus, github";
const TASKCLUSTER_FIELDS: &[&str] = &[
    "type",
    "root_url",
    "task_queue_id",
    "credentials",
    "poll_interval_s",
];
const BUILDKITE_FIELDS: &[&str] = &[
    "type",
    "queue",
    "credentials",
    "endpoint",
    "poll_interval_s",
];
const PROMETHEUS_FIELDS: &[&str] = &[
    "type",
    "url",
    "pending_query",
    "running_query",
    "credentials",
    "poll_interval_s",
];
const GITHUB_FIELDS: &[&str] = &[
    "type",
    "repository",
    "labels",
    "api_url",
    "credentials",
    "poll_interval_s",
];

fn poll_interval(v: &u64) -> Result<(), String> {
    let range = queue_source::MIN_POLL_INTERVAL_S..=queue_source::MAX_POLL_INTERVAL_S;
    if range.contains(v) {
        Ok(())
    } else {
        Err(format!(
            "must be between {} and {} seconds, got {v}",
            range.start(),
            range.end()
        ))
    }
}

fn optional_credentials(o: &mut Object<'_>) -> Option<Option<String>> {
    let name = o.optional::<String>("credentials").ok();
    o.check("credentials", name, |n| match n {
        Some(n) => queue_source::check_credentials_name(n),
        None => Ok(()),
    })
}

fn decode_queue(value: Value, path: String, errors: &mut Vec<FieldError>) -> Option<QueueSource> {
    // The fields a source may have depend on its type, so the type is looked at first;
    // with no usable type only `type` itself is reported, not every other field.
    let kind = match &value {
        Value::Object(map) => map.get("type").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let known: &'static [&'static str] = match kind.as_deref() {
        Some("taskcluster") => TASKCLUSTER_FIELDS,
        Some("buildkite") => BUILDKITE_FIELDS,
        Some("prometheus") => PROMETHEUS_FIELDS,
        Some("github") => GITHUB_FIELDS,
        _ => &["type"],
    };
    let mut o = Object::open(value, path, known, errors)?;
    let kind = o.required::<String>("type", QUEUE_KINDS);
    let d = queue_source::DEFAULT_POLL_INTERVAL_S;
    let source = match kind.as_deref() {
        Some("taskcluster") => {
            let root_url = o.required::<String>(
                "root_url",
                "the deployment's root URL, e.g. https://tc.example.com",
            );
            let root_url = o.check("root_url", root_url, |u| queue_source::check_base_url(u));
            let id = o.required::<String>("task_queue_id", "<provisionerId>/<workerType>");
            let id = o.check("task_queue_id", id, |i| {
                queue_source::check_task_queue_id(i)
            });
            let credentials = optional_credentials(&mut o);
            let poll = o.or("poll_interval_s", d);
            let poll = o.check("poll_interval_s", poll, poll_interval);
            (|| {
                Some(QueueSource::Taskcluster(TaskclusterSource {
                    root_url: root_url?,
                    task_queue_id: id?,
                    credentials: credentials?,
                    poll_interval_s: poll?,
                }))
            })()
        }
        Some("buildkite") => {
            let queue = o.optional::<String>("queue").ok();
            let queue = o.check("queue", queue, |q| match q {
                Some(q) => non_empty(q),
                None => Ok(()),
            });
            let credentials = o.required::<String>(
                "credentials",
                "the name of a [queue_credentials.<name>] entry holding agent_token",
            );
            let credentials = o.check("credentials", credentials, |n| {
                queue_source::check_credentials_name(n)
            });
            let endpoint = o.or(
                "endpoint",
                queue_source::DEFAULT_BUILDKITE_ENDPOINT.to_owned(),
            );
            let endpoint = o.check("endpoint", endpoint, |u| queue_source::check_base_url(u));
            let poll = o.or("poll_interval_s", d);
            let poll = o.check("poll_interval_s", poll, poll_interval);
            (|| {
                Some(QueueSource::Buildkite(BuildkiteSource {
                    queue: queue?,
                    credentials: credentials?,
                    endpoint: endpoint?,
                    poll_interval_s: poll?,
                }))
            })()
        }
        Some("prometheus") => {
            let url =
                o.required::<String>("url", "the server's base URL, e.g. http://prometheus:9090");
            let url = o.check("url", url, |u| queue_source::check_base_url(u));
            let pending = o.required::<String>(
                "pending_query",
                "a PromQL expression whose value is the number of pending tasks",
            );
            let pending = o.check("pending_query", pending, |q| non_empty(q));
            let running = o.optional::<String>("running_query").ok();
            let running = o.check("running_query", running, |q| match q {
                Some(q) => non_empty(q),
                None => Ok(()),
            });
            let credentials = optional_credentials(&mut o);
            let poll = o.or("poll_interval_s", d);
            let poll = o.check("poll_interval_s", poll, poll_interval);
            (|| {
                Some(QueueSource::Prometheus(PrometheusSource {
                    url: url?,
                    pending_query: pending?,
                    running_query: running?,
                    credentials: credentials?,
                    poll_interval_s: poll?,
                }))
            })()
        }
        Some("github") => {
            let repository = o.required::<String>("repository", "owner/name");
            let repository = o.check("repository", repository, |r| {
                queue_source::check_repository(r)
            });
            let labels = o.required::<Vec<String>>(
                "labels",
                "the runs-on labels a job must have, e.g. [self-hosted, linux]",
            );
            let labels = o.check("labels", labels, |l| {
                if l.is_empty() {
                    return Err("must hold at least one label".to_owned());
                }
                match l.iter().position(|x| x.trim().is_empty()) {
                    Some(i) => Err(format!("label {i} is empty")),
                    None => Ok(()),
                }
            });
            let api_url = o.or("api_url", queue_source::DEFAULT_GITHUB_API_URL.to_owned());
            let api_url = o.check("api_url", api_url, |u| queue_source::check_base_url(u));
            let credentials = optional_credentials(&mut o);
            let poll = o.or(
                "poll_interval_s",
                queue_source::DEFAULT_GITHUB_POLL_INTERVAL_S,
            );
            let poll = o.check("poll_interval_s", poll, poll_interval);
            (|| {
                Some(QueueSource::Github(GithubSource {
                    repository: repository?,
                    labels: labels?,
                    api_url: api_url?,
                    credentials: credentials?,
                    poll_interval_s: poll?,
                }))
            })()
        }
        Some(other) => {
            let field = o.path_of("type");
            o.error(field, format!("got {other:?}, expected {QUEUE_KINDS}"));
            o.map.clear();
            None
        }
        None => {
            o.map.clear();
            None
        }
    };
    o.finish();
    source
}
