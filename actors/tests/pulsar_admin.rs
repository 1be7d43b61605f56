//! The deduplication check against the real broker's admin REST API.
//!
//! 1. A topic in a namespace without a policy: the broker's setting decides (on, in our test
//!    broker).
//! 2. A namespace with deduplication switched off: the namespace decides, off.
//! 3. A topic there with its own policy on: the topic decides, on.
//! 4. An unreachable admin URL: an error naming the request.

use std::time::Duration;

use ferry_actors::pulsar::admin::{DecidedBy, PulsarAdmin, TopicName};
use ferry_test_support::broker::{broker, http_request};
use ferry_test_support::{unique_name, wait};

fn admin_call(method: &str, path: &str, body: Option<&str>) {
    let broker = broker();
    let (status, answer) =
        http_request(method, &broker.admin_url, path, body).expect("admin request");
    assert!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {answer}"
    );
}

#[tokio::test]
async fn deduplication_is_decided_by_topic_then_namespace_then_broker() {
    let broker = broker();
    let admin = PulsarAdmin::new(&broker.admin_url, None, None).expect("admin url");

    let default_topic = TopicName::parse(&unique_name("dedup-default")).expect("topic");
    let decided = admin.deduplication(&default_topic).await.expect("check");
    assert!(
        decided.enabled,
        "the test broker runs with deduplication on"
    );
    assert_eq!(decided.decided_by, DecidedBy::Broker);

    let namespace = unique_name("dedup-ns");
    admin_call(
        "PUT",
        &format!("/admin/v2/namespaces/public/{namespace}"),
        Some("{}"),
    );
    admin_call(
        "POST",
        &format!("/admin/v2/namespaces/public/{namespace}/deduplication"),
        Some("false"),
    );
    let topic = TopicName::parse(&format!("persistent://public/{namespace}/out")).expect("topic");
    let decided = admin.deduplication(&topic).await.expect("check");
    assert!(!decided.enabled, "switched off for the namespace");
    assert_eq!(decided.decided_by, DecidedBy::Namespace);

    admin_call(
        "PUT",
        &format!("/admin/v2/persistent/public/{namespace}/out"),
        None,
    );
    admin_call(
        "POST",
        &format!("/admin/v2/persistent/public/{namespace}/out/deduplicationEnabled"),
        Some("true"),
    );
    // Topic policies travel through a system topic: they apply shortly after the call.
    let decided = wait::until("the topic policy applies", Duration::from_secs(30), || {
        let admin = admin.clone();
        let topic = topic.clone();
        async move {
            let decided = admin.deduplication(&topic).await.expect("check");
            (decided.decided_by == DecidedBy::Topic).then_some(decided)
        }
    })
    .await;
    assert!(decided.enabled);

    let non_persistent = TopicName::parse("non-persistent://public/default/x").expect("topic");
    let decided = admin.deduplication(&non_persistent).await.expect("check");
    assert_eq!(decided.decided_by, DecidedBy::NonPersistentTopic);
    assert!(!decided.enabled);
}

#[tokio::test]
async fn an_unreachable_admin_api_is_an_error_naming_the_request() {
    let admin = PulsarAdmin::new("http://127.0.0.1:1", None, None).expect("admin url");
    let topic = TopicName::parse("persistent://public/default/t").expect("topic");
    let error = admin
        .deduplication(&topic)
        .await
        .expect_err("nothing listens");
    let message = error.to_string();
    assert!(
        message.starts_with("pulsar admin /admin/v2/persistent/public/default/t/deduplicationEnabled: cannot connect to 127.0.0.1:1"),
        "{message}"
    );
}
