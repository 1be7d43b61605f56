//! TLS and bearer tokens through the real `ferry` binary against real `ferry serve` clusters:
//!
//! - t10: a one-node cluster with an admin and a viewer token: the admin token creates and
//!   deletes; the viewer token gets, lists and reads status, and a write is PERMISSION_DENIED
//!   naming the RPC; no token or a wrong one is UNAUTHENTICATED; each refusal is one line;
//!   the health service stays open; no token value appears in the node's log (at debug level);
//! - t20: a three-node cluster with tokens forms (joins and Raft traffic carry the admin
//!   token), a follower forwards a create and a node removal to the leader, and a viewer's
//!   write on a follower is refused before it is forwarded;
//! - t30: a two-node cluster over TLS with a test CA made by `openssl`: the nodes join over
//!   https, the CLI works over https with --tls-ca, and without it (or over plain http) fails
//!   with one clear line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::{Cluster, ok_json_with, refused_with, run_with};
use common::text;
use serde_json::Value;

const ADMIN_TOKEN: &str = "adm-7f3c9e1b4d2a";
const VIEWER_TOKEN: &str = "view-5e8a2c6f0b1d";

fn as_admin() -> [(&'static str, &'static str); 1] {
    [("FERRY_TOKEN", ADMIN_TOKEN)]
}

fn as_viewer() -> [(&'static str, &'static str); 1] {
    [("FERRY_TOKEN", VIEWER_TOKEN)]
}

fn create_source(name: &str) -> Vec<&str> {
    vec![
        "sources",
        "create",
        "--name",
        name,
        "--source-type",
        "datagen",
        "--destination-topic-name",
        "persistent://public/default/generated",
        "--source-config",
        r#"{"count": 10}"#,
    ]
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|connector| connector["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Writes the admin and viewer token files into `dir` and returns the serve flags naming them.
fn token_flags(dir: &Path) -> Vec<String> {
    let admin = dir.join("admin.token");
    let viewer = dir.join("viewer.token");
    std::fs::write(&admin, format!("{ADMIN_TOKEN}\n")).expect("write the admin token");
    std::fs::write(&viewer, format!("{VIEWER_TOKEN}\n")).expect("write the viewer token");
    [
        "--admin-token-file",
        admin.to_str().expect("a utf-8 path"),
        "--viewer-token-file",
        viewer.to_str().expect("a utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Returns the index of a node that does not lead, asking node 0 with `env`.
fn follower(cluster: &Cluster, url: &str, env: &[(&str, &str)]) -> usize {
    let leader = ok_json_with(url, &["cluster", "leader"], env)["node_id"]
        .as_u64()
        .expect("a leader id");
    (0..cluster.nodes.len())
        .find(|index| *index as u64 + 1 != leader)
        .expect("a follower")
}

#[test]
fn t10_tokens_separate_admins_viewers_and_strangers_on_one_node() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flags = token_flags(dir.path());
    // Debug logs too: no level may log a token.
    let cluster = Cluster::start(1, &strs(&flags), &[("FERRY_LOG", "debug")]);
    let url = cluster.url(0);

    // The admin token may write.
    let created = ok_json_with(&url, &create_source("gen"), &as_admin());
    assert_eq!(created["name"], "gen");

    // The viewer token reads: get, list, status, offsets, nodes, version.
    let listed = ok_json_with(&url, &["sources", "list"], &as_viewer());
    assert_eq!(names(&listed), ["gen"]);
    let got = ok_json_with(&url, &["sources", "get", "--name", "gen"], &as_viewer());
    assert_eq!(got["name"], "gen");
    let status = ok_json_with(&url, &["sources", "status", "--name", "gen"], &as_viewer());
    assert!(status["instances"].is_array(), "{status}");
    ok_json_with(&url, &["offsets", "get", "--name", "gen"], &as_viewer());
    ok_json_with(&url, &["cluster", "nodes"], &as_viewer());
    let version = run_with(&url, &["version"], &as_viewer());
    assert!(version.status.success(), "{}", text(&version.stderr));

    // ... but may not write, and the refusal names the RPC.
    for (args, rpc) in [
        (create_source("other"), "CreateConnector"),
        (
            vec!["sources", "delete", "--name", "gen"],
            "DeleteConnector",
        ),
        (vec!["sources", "stop", "--name", "gen"], "StopConnector"),
        (vec!["cluster", "drain", "--node-id", "1"], "DrainNode"),
    ] {
        let line = refused_with(&url, &args, &as_viewer());
        assert!(line.starts_with("error: PERMISSION_DENIED: "), "{line}");
        assert!(line.contains(rpc), "{line}");
    }

    // No token, a wrong token, or a token file with a wrong token: UNAUTHENTICATED.
    let wrong_file = dir.path().join("wrong.token");
    std::fs::write(&wrong_file, "not-the-token\n").expect("write");
    let wrong_file = wrong_file.to_str().expect("a utf-8 path");
    for (args, env) in [
        (vec!["sources", "list"], vec![]),
        (
            vec!["sources", "list"],
            vec![("FERRY_TOKEN", "not-the-token")],
        ),
        (
            create_source("other"),
            vec![("FERRY_TOKEN", "not-the-token")],
        ),
        (vec!["sources", "list", "--token-file", wrong_file], vec![]),
    ] {
        let line = refused_with(&url, &args, &env);
        assert_eq!(
            line, "error: UNAUTHENTICATED: a valid bearer token is required",
            "{args:?}"
        );
    }
    let line = refused_with(&url, &["version"], &[]);
    assert!(
        line.ends_with(": UNAUTHENTICATED: a valid bearer token is required"),
        "{line}"
    );
    // The admin token from a file works like the variable.
    let admin_file = dir.path().join("admin.token");
    let mut args = create_source("from-file");
    args.extend(["--token-file", admin_file.to_str().expect("a utf-8 path")]);
    ok_json_with(&url, &args, &[]);

    // Nothing refused was stored, and the admin token deletes.
    let listed = ok_json_with(&url, &["sources", "list"], &as_admin());
    assert_eq!(names(&listed), ["from-file", "gen"]);
    ok_json_with(&url, &["sources", "delete", "--name", "gen"], &as_admin());

    // Standard gRPC health stays open for probes: a plain-HTTP/2 call without a token.
    let health = health_check(&cluster.nodes[0].address.to_string());
    assert_eq!(health, "SERVING");

    let logs = cluster.logs();
    assert!(logs.contains("ferry node listening"), "the log is read");
    assert!(logs.contains("tokens=true"), "{logs}");
    for token in [ADMIN_TOKEN, VIEWER_TOKEN] {
        assert!(!logs.contains(token), "a token leaked into the node log");
    }
}

/// Asks the node's gRPC health service for its overall status, without a token.
fn health_check(address: &str) -> String {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("an endpoint")
            .connect()
            .await
            .expect("connect");
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner();
        format!("{:?}", answer.status()).to_uppercase()
    })
}

#[test]
fn t20_a_cluster_with_tokens_forms_and_followers_forward_with_the_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flags = token_flags(dir.path());
    // Nodes 2 and 3 join node 1, and Raft runs, only if inter-node calls carry the token.
    let cluster = Cluster::start(3, &strs(&flags), &[]);
    let seed = cluster.url(0);
    let nodes = ok_json_with(&seed, &["cluster", "nodes"], &as_viewer());
    assert_eq!(
        nodes["nodes"].as_array().expect("nodes").len(),
        3,
        "{nodes}"
    );

    let follower = follower(&cluster, &seed, &as_admin());
    let url = cluster.url(follower);
    // A follower forwards the admin's create to the leader ...
    ok_json_with(&url, &create_source("forwarded"), &as_admin());
    assert_eq!(
        names(&ok_json_with(&seed, &["sources", "list"], &as_viewer())),
        ["forwarded"]
    );
    // ... but refuses a viewer's write itself.
    let line = refused_with(&url, &create_source("viewer"), &as_viewer());
    assert!(line.starts_with("error: PERMISSION_DENIED: "), "{line}");
    let line = refused_with(&url, &create_source("stranger"), &[]);
    assert!(line.starts_with("error: UNAUTHENTICATED: "), "{line}");

    // A node removal asked of a follower goes to the leader's admin API, with the token.
    let leader = ok_json_with(&url, &["cluster", "leader"], &as_viewer())["node_id"]
        .as_u64()
        .expect("a leader id");
    let victim_id = (1..=3)
        .find(|id| *id != leader && *id != follower as u64 + 1)
        .expect("another follower");
    let victim = victim_id.to_string();
    ok_json_with(
        &url,
        &["cluster", "drain", "--node-id", &victim],
        &as_admin(),
    );
    ok_json_with(
        &url,
        &["cluster", "remove", "--node-id", &victim],
        &as_admin(),
    );
    let after = ok_json_with(&url, &["cluster", "nodes"], &as_admin());
    let state = after["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["node_id"].as_u64() == Some(victim_id))
        .map(|node| node["state"].clone());
    assert_eq!(state, Some(Value::from("LEFT")), "{after}");
    for token in [ADMIN_TOKEN, VIEWER_TOKEN] {
        assert!(
            !cluster.logs().contains(token),
            "a token leaked into a node log"
        );
    }
}

/// A test CA and a node certificate for 127.0.0.1 and localhost, made by `openssl`.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        text(&output.stderr)
    );
}

fn make_pki(dir: &Path) -> TestPki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for name in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-days",
            "30",
            "-subj",
            "/CN=ferry test ca",
            "-keyout",
            "KEY",
            "-out",
            "CERT",
        ]);
        let key = format!("{name}.key.pem");
        let cert = format!("{name}.cert.pem");
        let args: Vec<&str> = args
            .into_iter()
            .map(|arg| match arg {
                "KEY" => key.as_str(),
                "CERT" => cert.as_str(),
                other => other,
            })
            .collect();
        openssl(dir, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "node.key.pem",
        "-out",
        "node.csr.pem",
    ]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write the extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr.pem",
            "-CA",
            "ca.cert.pem",
            "-CAkey",
            "ca.key.pem",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "node.ext",
            "-out",
            "node.cert.pem",
        ],
    );
    TestPki {
        ca: dir.join("ca.cert.pem"),
        cert: dir.join("node.cert.pem"),
        key: dir.join("node.key.pem"),
        other_ca: dir.join("other-ca.cert.pem"),
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a utf-8 path")
}

#[test]
fn t30_a_cluster_over_tls_joins_and_serves_the_cli_over_https() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = make_pki(dir.path());
    let flags = [
        "--tls-cert",
        path(&pki.cert),
        "--tls-key",
        path(&pki.key),
        "--tls-ca",
        path(&pki.ca),
    ];
    // Node 2 joins node 1 over https, trusting the test CA.
    let cluster = Cluster::start(2, &flags, &[]);
    let https = |index: usize| format!("https://{}", cluster.nodes[index].address);
    let trusted = [("FERRY_TLS_CA", path(&pki.ca))];

    let nodes = ok_json_with(&https(0), &["cluster", "nodes"], &trusted);
    assert_eq!(
        nodes["nodes"].as_array().expect("nodes").len(),
        2,
        "{nodes}"
    );
    // A follower forwards a write to the leader over the TLS peer channel.
    let follower = follower(&cluster, &https(0), &trusted);
    let mut args = create_source("over-tls");
    args.extend(["--tls-ca", path(&pki.ca)]);
    ok_json_with(&https(follower), &args, &[]);
    assert_eq!(
        names(&ok_json_with(&https(0), &["sources", "list"], &trusted)),
        ["over-tls"]
    );

    // Without the CA (the web roots do not know it), or with another CA: a certificate error.
    for env in [vec![], vec![("FERRY_TLS_CA", path(&pki.other_ca))]] {
        let line = refused_with(&https(0), &["sources", "list"], &env);
        assert!(
            line.starts_with(&format!(
                "error: cannot reach the admin API at {}",
                https(0)
            )),
            "{line}"
        );
        assert!(line.contains("certificate"), "{line}");
        assert!(line.contains("--tls-ca"), "{line}");
    }
    // Plain http to a TLS node fails too, in one line.
    let line = refused_with(&cluster.url(0), &["sources", "list"], &[]);
    assert!(line.contains("use an https:// --admin-url"), "{line}");
    // A --tls-ca that holds no certificate is named.
    let line = refused_with(
        &https(0),
        &["sources", "list"],
        &[("FERRY_TLS_CA", path(&pki.key))],
    );
    assert!(line.starts_with("error: invalid --tls-ca: "), "{line}");
    // --tls-ca with an http:// URL is a mistake worth naming.
    let line = refused_with(&cluster.url(0), &["sources", "list"], &trusted);
    assert!(line.starts_with("error: invalid --tls-ca: "), "{line}");
}
