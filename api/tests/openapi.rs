//! The committed OpenAPI document (`api/openapi.json`) is the one the code generates.
//! It is an `expect_test::expect_file!`: a drift fails with a diff; regenerate it after
//! changing a route with `UPDATE_EXPECT=1 cargo test -p api --test openapi`.
//! The plan and forecast bodies, with every variant of the core types they carry, are
//! checked against it.

use api::plans::{ForecastView, HistoryPoint, PlanView, RecentPlan};
use capstan_core::{
    Action, Forecast, ForecastPoint, Plan, PlanReport, PoolId, Quantile, ScalingPolicy, SkipReason,
    SkippedOffering, TargetTerm, TerminateReason, Timestamp, WorkerId,
};
use serde_json::Value;

#[test]
fn openapi_document_is_committed() {
    let generated = api::openapi::document()
        .to_pretty_json()
        .expect("the document serializes")
        + "\n";
    // api/openapi.json, where it is served from and committed.
    expect_test::expect_file!["../openapi.json"].assert_eq(&generated);
}

#[test]
fn every_route_but_the_probes_and_self_authenticating_ones_requires_a_token_in_the_document() {
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            // Probes, and routes whose request proves itself: a worker's registration
            // token or machine secret, a webhook's signature.
            let open = [
                "/healthz",
                "/readyz",
                "/v1/workers/register",
                "/v1/webhooks/github",
            ]
            .contains(&path.as_str());
            assert_eq!(secured, !open, "{method} {path}");
            assert!(
                open || path.starts_with("/v1/") || path == "/metrics",
                "{path}"
            );
        }
    }
    assert!(operations >= 22, "{operations}");
}

/// Whether `value` conforms to `schema` of the document `doc`, for the keywords the
/// document uses: the reasons it does not, each with its JSON path. A keyword this does
/// not know is a reason too, so nothing passes unchecked. Stricter than JSON Schema in
/// one way: an object described by `properties` may hold nothing else unless
/// `additionalProperties` says so, so a field the type sends must be documented.
fn conformance(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let schema = schema.as_object().expect("a schema is an object");
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{at}: unexpected $ref {reference}"));
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "{at}: $ref to a missing schema {name}");
        return conformance(doc, target, value, at);
    }
    for (keyword, rule) in schema {
        match keyword.as_str() {
            // Annotations; `pattern` only on pool ids, whose own tests check it.
            "description" | "format" | "examples" | "default" | "title" | "pattern" => {}
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{at}: type {rule}"),
                };
                let fits = |t: &str| match t {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    other => panic!("{at}: type {other}"),
                };
                if !types.iter().any(|t| fits(t)) {
                    wrong.push(format!("{at}: {value} is not of type {rule}"));
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(value) {
                    wrong.push(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(v), Some(bound)) = (value.as_f64(), rule.as_f64()) {
                    let within = if keyword == "minimum" {
                        v >= bound
                    } else {
                        v <= bound
                    };
                    if !within {
                        wrong.push(format!("{at}: {v} is beyond its {keyword} {bound}"));
                    }
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                let len = match value {
                    Value::String(s) => s.chars().count(),
                    Value::Array(a) => a.len(),
                    _ => continue,
                };
                let bound = rule.as_u64().unwrap() as usize;
                let within = if keyword.starts_with("min") {
                    len >= bound
                } else {
                    len <= bound
                };
                if !within {
                    wrong.push(format!(
                        "{at}: length {len} is beyond its {keyword} {bound}"
                    ));
                }
            }
            "oneOf" => {
                let fitting = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| conformance(doc, s, value, at).is_empty())
                    .count();
                if fitting != 1 {
                    wrong.push(format!("{at}: {value} fits {fitting} of oneOf, not 1"));
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in rule.as_array().unwrap().iter().filter_map(Value::as_str) {
                        if !object.contains_key(name) {
                            wrong.push(format!("{at}: required {name} is missing"));
                        }
                    }
                }
            }
            "properties" | "additionalProperties" => {
                let Some(object) = value.as_object() else {
                    continue;
                };
                if keyword == "additionalProperties" && schema.contains_key("properties") {
                    continue; // checked with the properties
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                for (name, v) in object {
                    let path = format!("{at}.{name}");
                    match (properties.and_then(|p| p.get(name)), additional) {
                        (Some(s), _) => wrong.extend(conformance(doc, s, v, &path)),
                        (None, Some(Value::Bool(true))) => {}
                        (None, Some(s @ Value::Object(_))) => {
                            wrong.extend(conformance(doc, s, v, &path));
                        }
                        (None, _) => wrong.push(format!("{path}: not in the document")),
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, v) in items.iter().enumerate() {
                        wrong.extend(conformance(doc, rule, v, &format!("{at}[{i}]")));
                    }
                }
            }
            other => wrong.push(format!(
                "{at}: the schema keyword {other} is not checked here"
            )),
        }
    }
    wrong
}

/// The schema of `path`'s GET answer with `status`.
fn answer_schema<'a>(doc: &'a Value, path: &str, status: &str) -> &'a Value {
    let schema =
        &doc["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "no {status} JSON answer documented for GET {path}"
    );
    schema
}

/// Skip reasons and actions: the test below builds one of each (and every terminate
/// reason and target term, from their `ALL`); these matches stop compiling when core
/// grows a variant it would leave out.
#[allow(dead_code)]
fn every_variant_is_built_below(s: &SkipReason, a: &Action) {
    match s {
        SkipReason::Unavailable { .. }
        | SkipReason::OverOwnMax { .. }
        | SkipReason::OverBudget { .. } => {}
    }
    match a {
        Action::Launch { .. } | Action::Terminate { .. } => {}
    }
}

#[test]
fn plans_and_forecasts_as_served_conform_to_the_document() {
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    let t = Timestamp::from_unix_secs(1_800_000_000);
    let mut actions = vec![
        Action::Launch {
            launch_config_id: "a".into(),
            zone: Some("z".into()),
            count: 2,
            idempotency_token: "p-1-0".into(),
        },
        Action::Launch {
            launch_config_id: "b".into(),
            zone: None,
            count: 1,
            idempotency_token: "p-1-1".into(),
        },
    ];
    for reason in TerminateReason::ALL {
        actions.push(Action::Terminate {
            worker: WorkerId::from_string("w"),
            reason,
        });
    }
    let skipped = |launch_config_id: &str, reason| SkippedOffering {
        launch_config_id: launch_config_id.into(),
        reason,
    };
    let plan = |target_set_by, budget_slots| Plan {
        actions: actions.clone(),
        report: PlanReport {
            at: t,
            policy: ScalingPolicy::Forecast,
            forecast_slots: 3,
            backlog_slots: 1,
            boot_hedge_slots: 0,
            min_slots: 0,
            schedule_slots: 0,
            max_slots: 10,
            budget_slots,
            target_slots: 3,
            target_set_by,
            keep_slots: 3,
            held_slots: 0,
            idle_timeout_s: Some(600.0),
            idle_timeout_chosen: false,
            current_slots: 1,
            launch_slots: 2,
            launched_last_minute: 0,
            rate_limited: true,
            unmet_slots: 1,
            skipped_offerings: vec![
                skipped(
                    "u",
                    SkipReason::Unavailable {
                        until: t,
                        reason: "capacity".into(),
                    },
                ),
                skipped(
                    "o",
                    SkipReason::OverOwnMax {
                        max_slots: 1,
                        current_slots: 1,
                    },
                ),
                skipped(
                    "c",
                    SkipReason::OverBudget {
                        current_cost_per_hour: 1.5,
                        instance_price_per_hour: 0.25,
                        max_cost_per_hour: 1.6,
                    },
                ),
            ],
        },
    };
    let pool_id = PoolId::new("ci/linux").unwrap();
    let plan_schema = answer_schema(&doc, "/v1/pools/{pool_id}/plan", "200");
    for (i, term) in TargetTerm::ALL.into_iter().enumerate() {
        let plan = plan(term, (i % 2 == 0).then_some(4));
        let view = PlanView {
            pool_id: pool_id.clone(),
            at: t,
            owner: "r".into(),
            summary: plan.summary(),
            recent_actions: vec![RecentPlan {
                at: t,
                owner: "r".into(),
                actions: plan.actions.clone(),
                summary: plan.summary(),
            }],
            plan,
        };
        let json = serde_json::to_value(&view).unwrap();
        let wrong = conformance(&doc, plan_schema, &json, "$");
        assert!(wrong.is_empty(), "{wrong:#?}\n{json:#}");
    }

    let mut forecast = Forecast {
        made_at: t,
        policy: ScalingPolicy::Reactive,
        lead_s: 90.5,
        target_slots: 4,
        backlog_slots: 2,
        expected_busy_slots: 3.25,
        points: vec![],
    };
    let forecast_schema = answer_schema(&doc, "/v1/pools/{pool_id}/forecast", "200");
    for points in [0, 2] {
        forecast.points = (0..points)
            .map(|i| ForecastPoint {
                at: t.plus_secs(60 * i),
                mean: 2.5,
                quantiles: vec![Quantile { p: 0.9, slots: 4.0 }],
            })
            .collect();
        let view = ForecastView {
            pool_id: pool_id.clone(),
            made_at: t,
            forecast: forecast.clone(),
            history: vec![HistoryPoint {
                at: t,
                width_s: 3600,
                samples: 60,
                pending: 1,
                pending_mean: 0.5,
                running: 2,
                running_mean: 1.25,
                arrivals: 3,
                completions: 4,
            }],
        };
        let json = serde_json::to_value(&view).unwrap();
        let wrong = conformance(&doc, forecast_schema, &json, "$");
        assert!(wrong.is_empty(), "{wrong:#?}\n{json:#}");
    }

    // The check itself sees a wrong body.
    let mut json = serde_json::to_value(ForecastView {
        pool_id,
        made_at: t,
        forecast,
        history: vec![],
    })
    .unwrap();
    json["forecast"]["policy"] = "guess".into();
    json["forecast"]["points"][0]["extra"] = 1.into();
    json["history"] = serde_json::json!([{"at": "x", "pending": -1, "running": 0}]);
    let wrong = conformance(&doc, forecast_schema, &json, "$");
    for expected in [
        "$.forecast.policy: \"guess\" is not one of",
        "$.forecast.points[0].extra: not in the document",
        "$.history[0].pending: -1 is beyond its minimum 0",
        "$.history[0]: required arrivals is missing",
    ] {
        assert!(
            wrong.iter().any(|w| w.starts_with(expected)),
            "{expected} not among {wrong:#?}"
        );
    }
}
