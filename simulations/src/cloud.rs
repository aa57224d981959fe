//! The simulated cloud: how long machines take to boot, what they cost, when they are
//! taken away and when launches fail.
//!
//! Read from a `cloud.yaml` (see `docs/simulations.md` for the format) with
//! [`CloudModel::from_yaml`], or [`CloudModel::default`] for the setting the README's
//! numbers use: constant boot of 120 s, per-second billing without a minimum, no
//! interruptions, no launch failures. Every field is optional. Top-level fields apply
//! to every launch config of the pool; `launch_configs.<id>` overrides them for one.
//!
//! Errors name the field's path (`launch_configs.c6i-spot.boot.log_normal.sigma: must
//! be >= 0, got -1`). Unknown fields are errors, so a typo never falls back to a
//! default silently.

use std::collections::BTreeMap;
use std::fmt;

use capstan_core::{Market, PoolSpec};
use serde_json::{Map, Value};

use crate::rng::SimRng;

/// How long a launched machine takes to become ready.
#[derive(Debug, Clone, PartialEq)]
pub enum BootTime {
    /// Always this many seconds.
    Constant(f64),
    /// Uniform between two bounds, in seconds.
    Uniform {
        /// Shortest boot.
        min_s: f64,
        /// Longest boot.
        max_s: f64,
    },
    /// Log-normal with this median and shape, capped at `max_s`.
    LogNormal {
        /// Median boot, in seconds.
        median_s: f64,
        /// Standard deviation of the log.
        sigma: f64,
        /// Cap, in seconds.
        max_s: f64,
    },
}

impl BootTime {
    /// One draw, in whole milliseconds (constant boots draw nothing).
    pub fn sample_ms(&self, rng: &mut SimRng) -> i64 {
        let s = match *self {
            Self::Constant(s) => s,
            Self::Uniform { min_s, max_s } => min_s + (max_s - min_s) * rng.uniform(),
            Self::LogNormal {
                median_s,
                sigma,
                max_s,
            } => rng.log_normal(median_s, sigma).min(max_s),
        };
        (s * 1000.0).round() as i64
    }

    /// A typical boot, in seconds: the constant, or the median of the distribution.
    pub fn typical_s(&self) -> f64 {
        match *self {
            Self::Constant(s) => s,
            Self::Uniform { min_s, max_s } => (min_s + max_s) / 2.0,
            Self::LogNormal { median_s, .. } => median_s,
        }
    }

    /// The boot time as a constant, if it is one.
    pub fn constant_s(&self) -> Option<f64> {
        match *self {
            Self::Constant(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for BootTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Constant(s) => write!(f, "{s} s"),
            Self::Uniform { min_s, max_s } => write!(f, "uniform {min_s}-{max_s} s"),
            Self::LogNormal {
                median_s,
                sigma,
                max_s,
            } => write!(
                f,
                "log-normal median {median_s} s, sigma {sigma}, max {max_s} s"
            ),
        }
    }
}

/// A window (seconds after the trace's first submit) in which every launch of a
/// launch config fails with insufficient capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureWindow {
    /// Start, seconds after the first submit.
    pub start_s: f64,
    /// End (exclusive), seconds after the first submit.
    pub end_s: f64,
}

/// How one launch config behaves in the simulated cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferingModel {
    /// Launch-to-ready time.
    pub boot: BootTime,
    /// Billed at least this many seconds per instance.
    pub billing_minimum_s: f64,
    /// Interruptions per instance-hour (exponential time to interruption).
    pub interruptions_per_hour: f64,
    /// Probability that one instance launch fails with insufficient capacity.
    pub launch_failure_probability: f64,
    /// Windows in which every launch fails.
    pub failure_windows: Vec<FailureWindow>,
    /// Price of an instance-hour; `None` takes the launch config's price (0 if none).
    pub price_per_hour: Option<f64>,
}

impl Default for OfferingModel {
    fn default() -> Self {
        Self {
            boot: BootTime::Constant(120.0),
            billing_minimum_s: 0.0,
            interruptions_per_hour: 0.0,
            launch_failure_probability: 0.0,
            failure_windows: Vec::new(),
            price_per_hour: None,
        }
    }
}

/// The whole simulated cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudModel {
    /// How long an offering that failed a launch is marked unavailable, in seconds.
    pub unavailable_ttl_s: f64,
    /// Applies to launch configs not listed in `overrides`. Its interruption rate
    /// applies to spot launch configs only.
    pub defaults: OfferingModel,
    /// Per launch config id.
    pub overrides: BTreeMap<String, OfferingModel>,
}

impl Default for CloudModel {
    fn default() -> Self {
        Self {
            unavailable_ttl_s: 300.0,
            defaults: OfferingModel::default(),
            overrides: BTreeMap::new(),
        }
    }
}

/// One problem with a cloud model, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct CloudError {
    /// Path of the field (`launch_configs.spot.boot`); empty for the whole document.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "cloud model: {}", self.message)
        } else {
            write!(f, "cloud model: {}: {}", self.field, self.message)
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> CloudError {
    CloudError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, CloudError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected a mapping, found {}", kind(v))))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn check_keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), CloudError> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(err(
                &join(path, key),
                format!("unknown field, expected one of {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// A number in `[min, max]` (inclusive).
fn number(v: &Value, path: &str, min: f64, max: f64) -> Result<f64, CloudError> {
    let x = v
        .as_f64()
        .ok_or_else(|| err(path, format!("expected a number, found {}", kind(v))))?;
    if !(min..=max).contains(&x) {
        let range = if max == f64::INFINITY {
            format!(">= {min}")
        } else {
            format!("in [{min}, {max}]")
        };
        return Err(err(path, format!("must be {range}, got {x}")));
    }
    Ok(x)
}

const OFFERING_KEYS: [&str; 6] = [
    "boot",
    "billing_minimum_s",
    "interruptions_per_hour",
    "launch_failure_probability",
    "failure_windows",
    "price_per_hour",
];

fn parse_boot(v: &Value, path: &str) -> Result<BootTime, CloudError> {
    if v.is_number() {
        return Ok(BootTime::Constant(number(v, path, 0.0, 86_400.0)?));
    }
    let obj = as_object(v, path)?;
    if obj.len() != 1 {
        return Err(err(
            path,
            "expected a number of seconds or exactly one of constant, uniform, log_normal",
        ));
    }
    let (name, body) = obj.iter().next().expect("one entry");
    let p = join(path, name);
    match name.as_str() {
        "constant" => Ok(BootTime::Constant(number(body, &p, 0.0, 86_400.0)?)),
        "uniform" => {
            let o = as_object(body, &p)?;
            check_keys(o, &p, &["min_s", "max_s"])?;
            let get = |k: &str| {
                o.get(k)
                    .ok_or_else(|| err(&join(&p, k), "required"))
                    .and_then(|v| number(v, &join(&p, k), 0.0, 86_400.0))
            };
            let (min_s, max_s) = (get("min_s")?, get("max_s")?);
            if max_s < min_s {
                return Err(err(
                    &join(&p, "max_s"),
                    format!("must be >= min_s ({min_s}), got {max_s}"),
                ));
            }
            Ok(BootTime::Uniform { min_s, max_s })
        }
        "log_normal" => {
            let o = as_object(body, &p)?;
            check_keys(o, &p, &["median_s", "sigma", "max_s"])?;
            let median_s = o
                .get("median_s")
                .ok_or_else(|| err(&join(&p, "median_s"), "required"))
                .and_then(|v| number(v, &join(&p, "median_s"), 0.0, 86_400.0))?;
            let sigma = o
                .get("sigma")
                .ok_or_else(|| err(&join(&p, "sigma"), "required"))
                .and_then(|v| number(v, &join(&p, "sigma"), 0.0, 5.0))?;
            let max_s = match o.get("max_s") {
                Some(v) => number(v, &join(&p, "max_s"), median_s, 86_400.0)?,
                None => 3600.0_f64.max(median_s),
            };
            Ok(BootTime::LogNormal {
                median_s,
                sigma,
                max_s,
            })
        }
        _ => Err(err(
            &p,
            "unknown boot distribution, expected constant, uniform or log_normal",
        )),
    }
}

fn parse_windows(v: &Value, path: &str) -> Result<Vec<FailureWindow>, CloudError> {
    let list = v
        .as_array()
        .ok_or_else(|| err(path, format!("expected a list, found {}", kind(v))))?;
    list.iter()
        .enumerate()
        .map(|(i, w)| {
            let p = format!("{path}[{i}]");
            let o = as_object(w, &p)?;
            check_keys(o, &p, &["start_s", "end_s"])?;
            let get = |k: &str| {
                o.get(k)
                    .ok_or_else(|| err(&join(&p, k), "required"))
                    .and_then(|v| number(v, &join(&p, k), 0.0, f64::INFINITY))
            };
            let (start_s, end_s) = (get("start_s")?, get("end_s")?);
            if end_s <= start_s {
                return Err(err(
                    &join(&p, "end_s"),
                    format!("must be > start_s ({start_s}), got {end_s}"),
                ));
            }
            Ok(FailureWindow { start_s, end_s })
        })
        .collect()
}

/// Reads the offering fields present in `obj` on top of `base`.
fn parse_offering(
    obj: &Map<String, Value>,
    path: &str,
    base: &OfferingModel,
    interruptions_key: &str,
) -> Result<OfferingModel, CloudError> {
    let mut m = base.clone();
    if let Some(v) = obj.get("boot") {
        m.boot = parse_boot(v, &join(path, "boot"))?;
    }
    if let Some(v) = obj.get("billing_minimum_s") {
        m.billing_minimum_s = number(v, &join(path, "billing_minimum_s"), 0.0, 86_400.0)?;
    }
    if let Some(v) = obj.get(interruptions_key) {
        m.interruptions_per_hour = number(v, &join(path, interruptions_key), 0.0, 3600.0)?;
    }
    if let Some(v) = obj.get("launch_failure_probability") {
        m.launch_failure_probability =
            number(v, &join(path, "launch_failure_probability"), 0.0, 1.0)?;
    }
    if let Some(v) = obj.get("failure_windows") {
        m.failure_windows = parse_windows(v, &join(path, "failure_windows"))?;
    }
    if let Some(v) = obj.get("price_per_hour") {
        m.price_per_hour = Some(number(
            v,
            &join(path, "price_per_hour"),
            0.0,
            f64::INFINITY,
        )?);
    }
    Ok(m)
}

impl CloudModel {
    /// Parses and checks a cloud model written in YAML (or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, CloudError> {
        let value: Value =
            serde_norway::from_str(text).map_err(|e| err("", format!("not valid YAML: {e}")))?;
        Self::from_value(&value)
    }

    /// Checks and converts an already parsed document.
    pub fn from_value(value: &Value) -> Result<Self, CloudError> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let obj = as_object(value, "")?;
        let mut top_keys: Vec<&str> = OFFERING_KEYS
            .iter()
            .copied()
            .filter(|k| *k != "interruptions_per_hour")
            .collect();
        top_keys.extend([
            "spot_interruptions_per_hour",
            "unavailable_ttl_s",
            "launch_configs",
        ]);
        check_keys(obj, "", &top_keys)?;
        let mut model = Self::default();
        if let Some(v) = obj.get("unavailable_ttl_s") {
            model.unavailable_ttl_s = number(v, "unavailable_ttl_s", 0.0, 86_400.0)?;
        }
        model.defaults = parse_offering(
            obj,
            "",
            &OfferingModel::default(),
            "spot_interruptions_per_hour",
        )?;
        if let Some(v) = obj.get("launch_configs") {
            for (id, body) in as_object(v, "launch_configs")? {
                let path = format!("launch_configs.{id}");
                let o = as_object(body, &path)?;
                check_keys(o, &path, &OFFERING_KEYS)?;
                // An override starts from the defaults, interruptions included only if
                // it sets its own rate (the default rate is for spot configs).
                let mut base = model.defaults.clone();
                base.interruptions_per_hour = 0.0;
                let m = parse_offering(o, &path, &base, "interruptions_per_hour")?;
                model.overrides.insert(id.clone(), m);
            }
        }
        Ok(model)
    }

    /// The model of each of `spec`'s launch configs, in the spec's order, with prices
    /// resolved. Fails on an override naming a launch config the pool does not have.
    pub fn resolve(&self, spec: &PoolSpec) -> Result<Vec<OfferingModel>, CloudError> {
        for id in self.overrides.keys() {
            if spec.launch_config(id).is_none() {
                return Err(err(
                    &format!("launch_configs.{id}"),
                    format!("no launch config with this id in pool {}", spec.id),
                ));
            }
        }
        Ok(spec
            .launch_configs
            .iter()
            .map(|lc| {
                let mut m = match self.overrides.get(&lc.id) {
                    Some(m) => m.clone(),
                    None => {
                        let mut m = self.defaults.clone();
                        if lc.market != Market::Spot {
                            m.interruptions_per_hour = 0.0;
                        }
                        m
                    }
                };
                m.price_per_hour = m.price_per_hour.or(lc.price_per_hour).or(Some(0.0));
                m
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default_setting() {
        let m = CloudModel::from_yaml("").unwrap();
        assert_eq!(m, CloudModel::default());
        assert_eq!(m.defaults.boot, BootTime::Constant(120.0));
    }

    #[test]
    fn full_document_parses() {
        let m = CloudModel::from_yaml(
            "billing_minimum_s: 60\n\
             unavailable_ttl_s: 600\n\
             boot: {log_normal: {median_s: 90, sigma: 0.3}}\n\
             spot_interruptions_per_hour: 0.05\n\
             launch_failure_probability: 0.01\n\
             failure_windows: [{start_s: 3600, end_s: 7200}]\n\
             launch_configs:\n  od:\n    boot: {uniform: {min_s: 100, max_s: 140}}\n    price_per_hour: 0.4\n",
        )
        .unwrap();
        assert_eq!(m.unavailable_ttl_s, 600.0);
        assert_eq!(m.defaults.billing_minimum_s, 60.0);
        assert_eq!(m.defaults.interruptions_per_hour, 0.05);
        assert_eq!(
            m.defaults.failure_windows,
            vec![FailureWindow {
                start_s: 3600.0,
                end_s: 7200.0
            }]
        );
        let od = &m.overrides["od"];
        assert_eq!(
            od.boot,
            BootTime::Uniform {
                min_s: 100.0,
                max_s: 140.0
            }
        );
        // Inherited from the top level, except the spot interruption rate.
        assert_eq!(od.billing_minimum_s, 60.0);
        assert_eq!(od.interruptions_per_hour, 0.0);
        assert_eq!(od.price_per_hour, Some(0.4));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "boot: -3",
                "cloud model: boot: must be in [0, 86400], got -3",
            ),
            (
                "boot: {log_normal: {median_s: 90, sigma: -1}}",
                "cloud model: boot.log_normal.sigma: must be in [0, 5], got -1",
            ),
            (
                "boot: {gamma: {k: 1}}",
                "cloud model: boot.gamma: unknown boot distribution, expected constant, uniform or log_normal",
            ),
            (
                "launch_failure_probability: 2",
                "cloud model: launch_failure_probability: must be in [0, 1], got 2",
            ),
            (
                "failure_windows: [{start_s: 10, end_s: 5}]",
                "cloud model: failure_windows[0].end_s: must be > start_s (10), got 5",
            ),
            (
                "launch_configs: {a: {spot_interruptions_per_hour: 1}}",
                "cloud model: launch_configs.a.spot_interruptions_per_hour: unknown field, expected one of boot, billing_minimum_s, interruptions_per_hour, launch_failure_probability, failure_windows, price_per_hour",
            ),
            (
                "billing_minimum: 60",
                "cloud model: billing_minimum: unknown field, expected one of boot, billing_minimum_s, launch_failure_probability, failure_windows, price_per_hour, spot_interruptions_per_hour, unavailable_ttl_s, launch_configs",
            ),
            (
                "boot: fast",
                "cloud model: boot: expected a mapping, found a string",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                CloudModel::from_yaml(text).unwrap_err().to_string(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn the_documented_example_parses_and_fits_the_default_pool() {
        let m = CloudModel::from_yaml(include_str!("../examples/cloud.yaml")).unwrap();
        assert_eq!(m.defaults.billing_minimum_s, 60.0);
        assert_eq!(m.overrides["on-demand"].boot, BootTime::Constant(120.0));
        let spec = crate::engine::default_pool(capstan_core::ScalingPolicy::Reactive, 1, Some(600));
        let resolved = m.resolve(&spec).unwrap();
        assert_eq!(resolved[0].price_per_hour, Some(0.384));
        assert_eq!(resolved[0].launch_failure_probability, 0.01);
    }

    #[test]
    fn boot_draws_stay_in_range_and_constants_draw_nothing() {
        let mut rng = SimRng::new(1);
        let u = BootTime::Uniform {
            min_s: 60.0,
            max_s: 90.0,
        };
        for _ in 0..1000 {
            let ms = u.sample_ms(&mut rng);
            assert!((60_000..=90_000).contains(&ms));
        }
        let before = rng.clone().next_u64();
        assert_eq!(BootTime::Constant(120.0).sample_ms(&mut rng), 120_000);
        assert_eq!(rng.next_u64(), before);
    }
}
