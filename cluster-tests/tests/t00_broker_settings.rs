//! The test broker runs with the settings Ferry's guarantees and checkers rely on.
//!
//! 1. Reach the broker named by `PULSAR_URL` / `PULSAR_ADMIN_URL` (fail, never skip, if down).
//! 2. Read its runtime configuration through the admin REST API.
//! 3. Check: deduplication on (effectively-once sources), inactive-topic deletion off (checkers
//!    read topics long after writing), functions worker off (Ferry replaces it).

use ferry_test_support::broker::{broker, http_get};

fn runtime_setting(configuration: &str, key: &str) -> Option<String> {
    // The endpoint answers one flat JSON object of string values: {"key":"value",...}.
    let marker = format!("\"{key}\":\"");
    let start = configuration.find(&marker)? + marker.len();
    let length = configuration[start..].find('"')?;
    Some(configuration[start..start + length].to_owned())
}

#[test]
fn the_test_broker_has_the_settings_ferry_relies_on() {
    let broker = broker();
    let (status, configuration) =
        http_get(&broker.admin_url, "/admin/v2/brokers/configuration/runtime")
            .expect("read the broker's runtime configuration");
    assert_eq!(status, 200, "{configuration}");
    for (key, expected) in [
        ("brokerDeduplicationEnabled", "true"),
        ("brokerDeleteInactiveTopicsEnabled", "false"),
        ("functionsWorkerEnabled", "false"),
    ] {
        assert_eq!(
            runtime_setting(&configuration, key).as_deref(),
            Some(expected),
            "broker setting {key}"
        );
    }
}

#[test]
fn runtime_setting_reads_one_key() {
    let configuration = r#"{"a":"1","brokerDeduplicationEnabled":"true","b":""}"#;
    assert_eq!(
        runtime_setting(configuration, "brokerDeduplicationEnabled").as_deref(),
        Some("true")
    );
    assert_eq!(runtime_setting(configuration, "b").as_deref(), Some(""));
    assert_eq!(runtime_setting(configuration, "missing"), None);
}
