//! Pool specs as operators write them: the documented example, defaults, and the
//! error report for bad specs.

use capstan_core::{Market, PoolSpec, ProviderKind, ScalingPolicy};

const EXAMPLE: &str = include_str!("../../examples/pool.yaml");

#[test]
fn documented_example_parses_with_every_field() {
    let spec = PoolSpec::from_yaml(EXAMPLE).unwrap();
    assert_eq!(spec.id.as_str(), "ci/linux-large");
    assert_eq!(spec.provider, ProviderKind::Aws);
    assert_eq!(spec.launch_configs.len(), 2);
    assert_eq!(spec.launch_configs[0].market, Market::Spot);
    assert_eq!(spec.launch_configs[0].capacity, 4);
    assert_eq!(spec.launch_configs[1].zone, None);
    assert_eq!(spec.scaling.policy, ScalingPolicy::Forecast);
    assert_eq!(spec.lifecycle.max_lifetime_s, Some(86_400));
    assert_eq!(spec.schedules[0].timezone, "Europe/Berlin");
    assert_eq!(spec.budget.as_ref().unwrap().max_cost_per_hour, 25.0);
    spec.validate().unwrap();
}

#[test]
fn minimal_spec_gets_documented_defaults() {
    let spec = PoolSpec::from_yaml(
        "id: small\nprovider: fake\nmax_capacity: 4\nlaunch_configs: [{id: a, instance_type: t}]\n",
    )
    .unwrap();
    assert_eq!(spec.min_capacity, 0);
    assert_eq!(spec.description, "");
    let lc = &spec.launch_configs[0];
    assert_eq!(
        (lc.market, lc.capacity, lc.priority),
        (Market::OnDemand, 1, 0)
    );
    assert_eq!(spec.scaling.policy, ScalingPolicy::Reactive);
    assert_eq!(spec.scaling.target_wait_s, 60);
    assert_eq!(spec.scaling.service_level, 0.95);
    assert_eq!(spec.scaling.scaling_ratio, 1.0);
    assert_eq!(
        spec.scaling.idle_timeout_s, None,
        "unset: capstan chooses it"
    );
    assert_eq!(spec.scaling.max_launches_per_minute, 20);
    assert_eq!(spec.lifecycle.registration_timeout_s, 900);
    assert_eq!(spec.lifecycle.heartbeat_timeout_s, 300);
    assert_eq!(spec.lifecycle.max_lifetime_s, None);
    assert!(spec.schedules.is_empty());
    assert!(spec.budget.is_none());
}

#[test]
fn five_mistakes_give_five_lines_naming_five_fields() {
    let bad = r#"
id: ci/linux-large
provider: aws
min_capacity: 50
max_capacity: 10
launch_configs:
  - id: a
    region: us-east-1
    instance_type: c6i.large
  - id: b
    region: us-east-1
    instance_type: c6i.large
    capacity: 0
  - id: a
    region: us-east-1
    instance_type: m6i.large
scaling:
  service_level: 1.5
schedules:
  - cron: "0 8 * * 1-5"
    timezone: Mars/Olympus_Mons
    duration_s: 3600
    min_capacity: 5
"#;
    let errors = PoolSpec::from_yaml(bad).unwrap_err();
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "min_capacity",
            "launch_configs[1].capacity",
            "launch_configs[2].id",
            "scaling.service_level",
            "schedules[0].timezone",
        ],
        "{text}"
    );
    assert!(
        text.contains("min_capacity: must be <= max_capacity (10), got 50"),
        "{text}"
    );
    assert!(
        text.contains("launch_configs[1].capacity: must be >= 1, got 0"),
        "{text}"
    );
    assert!(text.contains("duplicate of launch_configs[0].id"), "{text}");
}

#[test]
fn warm_slots_are_read_and_bounded_by_the_pool() {
    let spec = |warm: &str| {
        format!(
            "id: p\nprovider: fake\nmax_capacity: 4\nlaunch_configs:\n  - id: a\n    region: r\n    instance_type: t\nscaling:\n  warm_slots: {warm}\n"
        )
    };
    let ok = PoolSpec::from_yaml(&spec("2")).unwrap();
    assert_eq!(ok.scaling.warm_slots, 2);
    // The whole pool may be held warm.
    assert_eq!(
        PoolSpec::from_yaml(&spec("4")).unwrap().scaling.warm_slots,
        4
    );
    // Left out: none; zero, the default, is written without the field.
    let left_out = spec("0").replace("scaling:\n  warm_slots: 0\n", "");
    assert!(!left_out.contains("warm_slots"), "{left_out}");
    assert_eq!(
        PoolSpec::from_yaml(&left_out).unwrap().scaling.warm_slots,
        0
    );
    let plain = PoolSpec::from_yaml(&spec("0")).unwrap();
    assert_eq!(plain.scaling.warm_slots, 0);
    assert!(
        !serde_json::to_string(&plain)
            .unwrap()
            .contains("warm_slots")
    );
    assert!(
        serde_json::to_string(&ok)
            .unwrap()
            .contains("\"warm_slots\":2")
    );
    for (warm, says) in [
        (
            "5",
            "scaling.warm_slots: must be <= the pool's max_capacity (4), got 5",
        ),
        ("-1", "scaling.warm_slots: expected a whole number"),
    ] {
        let text = PoolSpec::from_yaml(&spec(warm)).unwrap_err().to_string();
        assert!(text.contains(says), "{warm}: {text}");
    }
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    let bad = r#"
id: p
provider: fake
max_capacity: 3
max_capcity: 4
launch_configs: [{id: a, instance_type: t, zonee: x}]
scaling: {polcy: forecast}
"#;
    let errors = PoolSpec::from_yaml(bad).unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["launch_configs[0].zonee", "scaling.polcy", "max_capcity"],
        "{errors}"
    );
    assert!(
        errors.0[2]
            .message
            .contains("expected one of: id, description")
    );
}

#[test]
fn wrong_types_name_the_field_and_the_expected_type() {
    let bad = r#"{"id": "p", "provider": "azure", "max_capacity": "ten", "min_capacity": -1,
                 "launch_configs": [{"id": "a", "instance_type": "t", "market": "reserved"}]}"#;
    let errors = PoolSpec::from_json(bad).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains(
            "provider: got string \"azure\", expected one of `aws`, `gcp`, `static`, `fake`"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "max_capacity: expected a whole number from 0 to 4294967295, got string \"ten\""
        ),
        "{text}"
    );
    assert!(
        text.contains("min_capacity: expected a whole number from 0 to 4294967295, got number -1"),
        "{text}"
    );
    assert!(
        text.contains("launch_configs[0].market: got string \"reserved\""),
        "{text}"
    );
    assert_eq!(errors.0.len(), 4, "{text}");
}

#[test]
fn cloud_providers_need_a_launch_config_and_gcp_needs_zones() {
    let errors = PoolSpec::from_yaml("id: p\nprovider: aws\nmax_capacity: 1\n").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "launch_configs: at least one launch config is required for provider aws"
    );
    let errors = PoolSpec::from_yaml(
        "id: p\nprovider: gcp\nmax_capacity: 1\nlaunch_configs: [{id: a, region: europe-west4, instance_type: n2-standard-8}]\n",
    )
    .unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with("launch_configs[0].zone: required for provider gcp")
    );
    // Static pools register their machines; no launch config needed.
    PoolSpec::from_yaml("id: lab/macs\nprovider: static\nmax_capacity: 10\n").unwrap();
}

#[test]
fn syntax_errors_point_at_the_line() {
    let errors = PoolSpec::from_yaml("id: p\nprovider: [aws\n").unwrap_err();
    assert!(errors.to_string().contains("line"), "{errors}");
    let errors = PoolSpec::from_json("{\"id\": }").unwrap_err();
    assert!(errors.to_string().contains("line 1"), "{errors}");
}

#[test]
fn bad_cron_and_budget_are_reported() {
    let errors = PoolSpec::from_yaml(
        "id: p\nprovider: static\nmax_capacity: 2\nschedules: [{cron: '61 * * * *', duration_s: 0, min_capacity: 3}]\nbudget: {max_cost_per_hour: -1}\n",
    )
    .unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "schedules[0].cron",
            "schedules[0].duration_s",
            "schedules[0].min_capacity",
            "budget.max_cost_per_hour"
        ],
        "{errors}"
    );
}

#[test]
fn validate_applies_the_same_rules_to_specs_built_in_code() {
    let mut spec = PoolSpec::from_yaml(EXAMPLE).unwrap();
    spec.launch_configs[1].id = "c6i-spot".into();
    spec.scaling.scaling_ratio = 0.0;
    let errors = spec.validate().unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["launch_configs[1].id", "scaling.scaling_ratio"]);
}

#[test]
fn json_round_trip_preserves_the_spec() {
    let spec = PoolSpec::from_yaml(EXAMPLE).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(PoolSpec::from_json(&json).unwrap(), spec);
}

const MINIMAL: &str =
    "id: small\nprovider: fake\nmax_capacity: 4\nlaunch_configs: [{id: a, instance_type: t}]\n";

#[test]
fn an_unset_idle_timeout_round_trips_as_absent_in_yaml_and_json() {
    let spec = PoolSpec::from_yaml(MINIMAL).unwrap();
    assert_eq!(spec.scaling.idle_timeout_s, None);
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("idle_timeout_s"), "{json}");
    assert_eq!(PoolSpec::from_json(&json).unwrap(), spec);
    let yaml = serde_norway::to_string(&spec).unwrap();
    assert!(!yaml.contains("idle_timeout_s"), "{yaml}");
    assert_eq!(PoolSpec::from_yaml(&yaml).unwrap(), spec);
    spec.validate().unwrap();
}

#[test]
fn a_set_idle_timeout_round_trips_in_yaml_and_json() {
    for secs in [0u64, 45, 600] {
        let text = format!("{MINIMAL}scaling: {{idle_timeout_s: {secs}}}\n");
        let spec = PoolSpec::from_yaml(&text).unwrap();
        assert_eq!(spec.scaling.idle_timeout_s, Some(secs));
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains(&format!("\"idle_timeout_s\":{secs}")),
            "{json}"
        );
        assert_eq!(PoolSpec::from_json(&json).unwrap(), spec);
        let yaml = serde_norway::to_string(&spec).unwrap();
        assert!(yaml.contains(&format!("idle_timeout_s: {secs}")), "{yaml}");
        assert_eq!(PoolSpec::from_yaml(&yaml).unwrap(), spec);
    }
}

#[test]
fn an_explicit_null_idle_timeout_means_capstan_chooses() {
    let yaml =
        PoolSpec::from_yaml(&format!("{MINIMAL}scaling: {{idle_timeout_s: null}}\n")).unwrap();
    assert_eq!(yaml.scaling.idle_timeout_s, None);
    let json = PoolSpec::from_json(
        r#"{"id": "small", "provider": "fake", "max_capacity": 4,
            "launch_configs": [{"id": "a", "instance_type": "t"}],
            "scaling": {"idle_timeout_s": null}}"#,
    )
    .unwrap();
    assert_eq!(json, yaml);
}

#[test]
fn a_bad_idle_timeout_names_the_field_and_what_is_expected() {
    for (value, got) in [
        ("-5", "number -5"),
        ("1.5", "number 1.5"),
        ("\"10m\"", "string \"10m\""),
        ("auto", "string \"auto\""),
    ] {
        let errors =
            PoolSpec::from_yaml(&format!("{MINIMAL}scaling: {{idle_timeout_s: {value}}}\n"))
                .unwrap_err();
        assert_eq!(
            errors.to_string(),
            format!(
                "scaling.idle_timeout_s: expected a whole number of seconds (>= 0), or leave it out for capstan to choose, got {got}"
            )
        );
    }
}
