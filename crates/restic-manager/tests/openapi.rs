//! `GET /api/v1/openapi.json` and the viewer at `/api/docs`, against the
//! real server: the document is served without login with this server's
//! URL; every operation it documents is routed (a request for it never
//! gets the API fallback's "no such API route"), guarded as its `security`
//! says (401 without credentials exactly where the document asks for
//! them), and every other method on a documented path is 405; it passes
//! the OpenAPI 3.1 validator from PyPI (`openapi-spec-validator`), and
//! real request bodies and answers (every list, the objects made, their
//! creation answers, an error) match the schemas it gives them; the
//! viewer page shows the operations in the real headless Chromium and
//! loads nothing from another host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rm_protocol::JobOutcome;
use rm_testkit::{wait_until, Api, Browser, RawAgent, TestServer, ADMIN_PASSWORD};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A well-formed id no object has, for every `{…}` of a path template.
const SOME_ULID: &str = "01J00000000000000000000000";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn served_document(server: &TestServer) -> Value {
    let (status, doc) = server
        .anonymous()
        .get("/api/v1/openapi.json")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

/// `(method, path template, operation)` of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    out
}

/// `template` with every `{name}` filled with a well-formed id.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                SOME_ULID
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_fallback(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such API route"
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_guarded_as_documented() {
    let server = TestServer::start().await.unwrap();
    let anonymous = server.anonymous();

    let doc = served_document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], format!("{}/api/v1", server.url));

    // The list tests walk is the served document's.
    let served: Vec<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method.to_uppercase(), path))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let listed: Vec<(String, String)> = rm_server::api_operations()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(served, listed);
    assert!(listed.len() >= 50, "only {} operations", listed.len());

    // The check below can fail: an undocumented path is the fallback's.
    let (status, body) = anonymous.get("/api/v1/no-such-route").await.unwrap();
    assert!(is_fallback(status, &body), "{status} {body}");

    let mut methods_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, path, operation) in operations(&doc) {
        methods_of
            .entry(path.clone())
            .or_default()
            .insert(method.clone());
        let url = format!("/api/v1{}", concrete(&path));
        let body = (method != "get" && method != "delete").then(|| json!({}));
        let (status, answer) = anonymous
            .send(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &url,
                body,
            )
            .await
            .unwrap();
        let what = format!("{} {path} ({url})", method.to_uppercase());
        assert!(!is_fallback(status, &answer), "{what} is not routed");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}: {answer}");
        let needs_credentials = operation
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        if needs_credentials {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized", "{what}");
            assert!(
                operation["responses"].get("401").is_some(),
                "{what} does not document its 401"
            );
        } else {
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} is public: {answer}"
            );
        }
    }

    // Every other method on a documented path is refused by the router:
    // nothing is served there that the document leaves out.
    for (path, documented) in &methods_of {
        let url = format!("/api/v1{}", concrete(path));
        for method in METHODS.iter().filter(|m| !documented.contains(**m)) {
            let (status, answer) = anonymous
                .send(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &url,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{} {path} is served but not documented: {answer}",
                method.to_uppercase()
            );
        }
    }
    server.stop().await.unwrap();
}

/// Runs `$RM_TEST_PYTHON` (default `python3`) with `script` and `args`;
/// the validator comes from PyPI (`openapi-spec-validator`, which brings
/// `openapi-schema-validator`; scripts/test installs it).
fn python(script: &str, args: &[&std::path::Path]) -> std::process::Output {
    let python = std::env::var("RM_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e} (scripts/test sets RM_TEST_PYTHON)"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'openapi_s"),
        "the OpenAPI validator is not installed for {python}: run scripts/test (it installs \
         it), or `python3 -m pip install openapi-spec-validator`\n{stderr}"
    );
    output
}

const VALIDATE_DOCUMENT: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator
doc = json.load(open(sys.argv[1]))
validate(doc, cls=OpenAPIV31SpecValidator)
print("valid", len(doc["paths"]))
"#;

/// Sends `body` (none for `null`) to `path` as `admin`, and keeps it and
/// the answer beside the schemas the document gives `method template`'s
/// body and the answer's status, for the validator.
async fn send_checked(
    admin: &Api,
    doc: &Value,
    samples: &mut Vec<Value>,
    method: &str,
    template: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let operation = &doc["paths"][template][method];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let what = format!("{} {template}", method.to_uppercase());
    let body = if body.is_null() {
        assert!(
            operation.get("requestBody").is_none(),
            "{what} documents a body"
        );
        None
    } else {
        let schema = operation["requestBody"]["content"]["application/json"]["schema"].clone();
        assert!(!schema.is_null(), "{what} documents no JSON body");
        samples.push(json!([schema, body, format!("{what} request body")]));
        Some(body)
    };
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let (status, answer) = admin.send(method, path, body).await.unwrap();
    let response = &operation["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{what} answered {status}, which it does not document: {answer}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    if !schema.is_null() {
        samples.push(json!([schema, answer, format!("{what} {status}")]));
    }
    (status, answer)
}

/// The id of the first alert, once there is one.
async fn wait_for_alert(admin: &Api) -> String {
    wait_until(WAIT, "a job_failed alert", || async {
        let (_, alerts) = admin.get("/api/v1/alerts").await.unwrap();
        alerts[0]["id"].is_string()
    })
    .await
    .unwrap();
    let (_, alerts) = admin.get("/api/v1/alerts").await.unwrap();
    alerts[0]["id"].as_str().unwrap().to_owned()
}

/// Checks each `[schema, instance, what]` of the samples file against the
/// document's components.
const VALIDATE_SAMPLES: &str = r##"
import json, sys
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))
registry = Registry().with_resource("urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012))
failed = 0
for schema, instance, what in samples:
    schema = json.loads(json.dumps(schema).replace('"#/components/', '"urn:doc#/components/'))
    for error in OAS31Validator(schema, registry=registry).iter_errors(instance):
        failed += 1
        print(what, "at", list(error.absolute_path), ":", error.message[:300])
print("checked", len(samples), "failed", failed)
sys.exit(1 if failed else 0)
"##;

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_real_answers_match_its_schemas() {
    let server = TestServer::start().await.unwrap();
    let admin = server.admin().await.unwrap();
    let doc = served_document(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, serde_json::to_vec(&doc).unwrap()).unwrap();

    let output = python(VALIDATE_DOCUMENT, &[&doc_file]);
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("valid "));

    // Something in every list: a host with labels, a repository and a
    // failed job (so a log and a `job_failed` alert), a policy, a silence,
    // a channel, an API token, a pending enrolment token. Each request's
    // body and answer are checked against the document too.
    let mut samples = Vec::new();
    let (host_id, agent_token) = server.enrolled_host("web-1").await.unwrap();
    let host = format!("/api/v1/hosts/{host_id}");
    let mut write = async |method: &str, template: &str, path: &str, body: Value| {
        let (status, answer) =
            send_checked(&admin, &doc, &mut samples, method, template, path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    };
    write(
        "patch",
        "/hosts/{id}",
        &host,
        json!({"labels": {"env": "prod"}}),
    )
    .await;
    write(
        "put",
        "/hosts/{id}/repository",
        &format!("{host}/repository"),
        json!({"url": "/srv/restic/web-1", "password": "hunter2-repo"}),
    )
    .await;
    let mut agent = RawAgent::connect_and_hello(&server.ws_url(), &agent_token)
        .await
        .unwrap();
    let init = agent.next_run().await.unwrap();
    agent
        .run_to_end(&init.job_id, JobOutcome::Succeeded, &[])
        .await
        .unwrap();
    write(
        "post",
        "/hosts/{id}/jobs",
        &format!("{host}/jobs"),
        json!({"kind": "backup", "params": {"paths": ["/etc"]}}),
    )
    .await;
    let backup = agent.next_run().await.unwrap();
    agent
        .run_to_end(
            &backup.job_id,
            JobOutcome::Failed,
            &["Fatal: unable to open config file: Stat: permission denied"],
        )
        .await
        .unwrap();
    let alert_id = wait_for_alert(&admin).await;
    write(
        "post",
        "/policies",
        "/api/v1/policies",
        json!({
            "name": "prod",
            "selector": {"env": "prod"},
            "priority": 10,
            "repository": {"url": "/srv/restic/{host}", "env": {}, "copy_to": {"url": "/srv/copy/{host}"}},
            "schedules": [{"kind": "backup", "cron": "0 2 * * *", "params": {"paths": ["/etc"]}, "jitter_seconds": 60}],
            "freshness_seconds": 93600,
        }),
    )
    .await;
    write(
        "post",
        "/silences",
        "/api/v1/silences",
        json!({"selector": {"env": "prod"}, "until": "2999-01-01T00:00:00Z", "reason": "maintenance"}),
    )
    .await;
    write(
        "post",
        "/notification-channels",
        "/api/v1/notification-channels",
        json!({"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}, "kinds": ["job_failed"]}),
    )
    .await;
    write(
        "post",
        "/api-tokens",
        "/api/v1/api-tokens",
        json!({"name": "ci", "ttl_days": 30}),
    )
    .await;
    write(
        "post",
        "/enrollment-tokens",
        "/api/v1/enrollment-tokens",
        json!({"name": "web-2", "ttl_seconds": 600, "labels": {"env": "prod"}}),
    )
    .await;
    write(
        "post",
        "/alerts/{id}/ack",
        &format!("/api/v1/alerts/{alert_id}/ack"),
        Value::Null,
    )
    .await;

    // The answer of every GET that needs no id, and of those that do for
    // the objects above, against the schema the document gives its 200.
    let mut gets: Vec<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(method, path, operation)| {
            method == "get"
                && !path.contains('{')
                && operation["responses"]["200"]["content"]
                    .get("application/json")
                    .is_some()
        })
        .map(|(_, path, _)| (path.clone(), path))
        .collect();
    for (template, id) in [
        ("/hosts/{id}", &host_id),
        ("/hosts/{id}/schedules", &host_id),
        ("/hosts/{id}/snapshots", &host_id),
        ("/hosts/{id}/repo-stats", &host_id),
        ("/hosts/{id}/repository", &host_id),
        ("/jobs/{id}", &backup.job_id),
        ("/jobs/{id}/logs", &backup.job_id),
        ("/alerts/{id}", &alert_id),
    ] {
        gets.push((template.to_owned(), template.replace("{id}", id)));
    }
    let mut empty = Vec::new();
    for (template, path) in &gets {
        let schema = doc["paths"][template]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"]
            .clone();
        assert!(!schema.is_null(), "GET {template} documents no 200 body");
        let (status, answer) = admin.get(&format!("/api/v1{path}")).await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {answer}");
        if answer.as_array().is_some_and(Vec::is_empty) {
            empty.push(template.clone());
        }
        samples.push(json!([schema, answer, format!("GET {template}")]));
    }
    // Snapshots come from a backup, which this fake agent never made.
    assert_eq!(
        empty,
        ["/hosts/{id}/snapshots"],
        "lists with nothing to check"
    );
    // Errors have the documented shape.
    let (status, answer) = admin
        .get(&format!("/api/v1/hosts/{SOME_ULID}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    samples.push(json!([
        doc["paths"]["/hosts/{id}"]["get"]["responses"]["404"]["content"]["application/json"]
            ["schema"],
        answer,
        "GET /hosts/{id} 404"
    ]));
    assert!(samples.len() >= 35, "only {} samples", samples.len());
    let samples_file = dir.path().join("samples.json");
    std::fs::write(&samples_file, serde_json::to_vec(&samples).unwrap()).unwrap();
    let output = python(VALIDATE_SAMPLES, &[&doc_file, &samples_file]);
    assert!(
        output.status.success(),
        "answers that do not match their schemas:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_viewer_shows_the_operations_without_login_and_from_no_other_host() {
    let server = TestServer::start().await.unwrap();
    let browser = Browser::start().await.unwrap();

    // No login: the page and the document are public.
    browser
        .goto(&format!("{}/api/docs", server.url))
        .await
        .unwrap();
    browser
        .wait_for("#api-operations:not([aria-busy])", WAIT)
        .await
        .unwrap();
    let title = browser.text("#api-title", WAIT).await.unwrap();
    assert!(title.starts_with("restic-manager API"), "{title}");
    let server_url = browser.text("#api-server", WAIT).await.unwrap();
    assert_eq!(server_url, format!("{}/api/v1", server.url));

    // One entry per documented operation, grouped by tag.
    let shown: u64 = browser
        .client()
        .execute(
            "return document.querySelectorAll('details.op').length;",
            Vec::new(),
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    assert_eq!(shown as usize, rm_server::api_operations().len());
    let summary = browser
        .text("section#tag-hosts #op-list_hosts > summary", WAIT)
        .await
        .unwrap();
    assert!(summary.contains("GET"), "{summary}");
    assert!(summary.contains("/hosts"), "{summary}");
    assert!(summary.contains("List hosts"), "{summary}");

    // Opened: its parameters and the schema of its answer.
    browser.click("#op-list_hosts > summary").await.unwrap();
    browser
        .wait_for_text("#op-list_hosts table.params", "limit", WAIT)
        .await
        .unwrap();
    browser
        .click("#op-list_hosts .response[data-status='200'] details.schema > summary")
        .await
        .unwrap();
    browser
        .wait_for_text(
            "#op-list_hosts .response[data-status='200'] pre.schema",
            "\"last_seen_at\"",
            WAIT,
        )
        .await
        .unwrap();
    browser.screenshot("api-docs-operation").await.unwrap();
    let security = browser
        .text("#op-list_hosts .security", WAIT)
        .await
        .unwrap();
    assert!(security.contains("bearer"), "{security}");
    // Closed entries are in the page too (as text a closed `details` hides).
    let public = browser
        .client()
        .execute(
            "return document.querySelector('#op-openapi_document .security').textContent;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(public, "No login needed.");

    // The filter narrows the list.
    browser.fill("#api-filter", "silence").await.unwrap();
    let visible: u64 = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('details.op')].filter(d => !d.hidden).length;",
            Vec::new(),
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    assert!(
        (1..10).contains(&visible),
        "{visible} operations match `silence`"
    );
    browser.screenshot("api-docs").await.unwrap();

    let origin = server.url.clone();
    for url in browser.requested_urls().await.unwrap() {
        assert!(url.starts_with(&origin), "the viewer loaded {url}");
    }
    assert_eq!(
        browser.console_errors().await.unwrap(),
        Vec::<String>::new()
    );

    // The UI links it from its navigation.
    browser
        .log_in(&server.url, "admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.click("nav a[href=\"/api/docs\"]").await.unwrap();
    browser
        .wait_for("#api-operations:not([aria-busy]) #op-list_hosts", WAIT)
        .await
        .unwrap();
    browser.close().await.unwrap();
    server.stop().await.unwrap();
}

/// Logged in or not, the document is the same: nothing in it depends on
/// who asks.
#[tokio::test]
async fn the_document_needs_no_login_and_is_the_same_for_everyone() {
    let server = TestServer::start().await.unwrap();
    let admin: Api = server.admin().await.unwrap();
    let anonymous = served_document(&server).await;
    let (status, logged_in) = admin.get("/api/v1/openapi.json").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(anonymous, logged_in);
    server.stop().await.unwrap();
}
