//! The OpenAPI 3.1 document of `/api/v1` (`GET /api/v1/openapi.json`) and
//! its viewer page (`GET /api/docs`).
//!
//! The document is not written by hand: every API handler carries one
//! `#[utoipa::path(...)]` annotation, and `utoipa_axum::routes!` registers
//! the handler in the router and its operation in the document from that
//! same annotation ([`crate::api`]'s router). This module adds what is the
//! same for every operation — the error responses every authenticated,
//! parameterised or body-taking request can get, the security schemes, the
//! info block — and the server URL of the answering server.

use std::sync::OnceLock;

use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    Response as ApiResponse, ResponseBuilder,
};
use utoipa::ToSchema;

use crate::state::AppState;

// The security schemes' names. The handlers' annotations spell them as
// literals (the macro takes no constants): a unit test below checks every
// operation names exactly these.
/// `Authorization: Bearer` (a login session's token or an API token).
const BEARER: &str = "bearer";
/// The web UI's session cookie.
const SESSION: &str = "session";
/// The web UI's CSRF header, needed with the cookie by every request that
/// changes something.
const CSRF: &str = "csrf";

/// The tags operations are grouped by, in the viewer's order.
const TAGS: &[(&str, &str)] = &[
    ("auth", "Logging in and out"),
    (
        "enrolment",
        "Enrolment tokens, agents enrolling themselves, agent upgrades",
    ),
    (
        "hosts",
        "Hosts: list, show, change, delete, agent tokens, snapshots, statistics",
    ),
    ("repository", "Where a host backs up to"),
    (
        "jobs",
        "Jobs on one host or many: start, list, cancel, logs, live events",
    ),
    ("schedules", "A host's schedules and the retention presets"),
    (
        "policies",
        "Fleet policies: what hosts with given labels get",
    ),
    (
        "drills",
        "Restore drills: a host's drills with their evidence, the fleet's last successful ones",
    ),
    ("alerts", "Alerts the server decided, and silences"),
    ("notifications", "Where alert notifications go"),
    ("users", "Operator accounts"),
    ("api-tokens", "The caller's own API tokens"),
    ("audit", "The audit log"),
    ("events", "The fleet's live change stream"),
    ("meta", "This document"),
];

/// Shared responses, by the name operations refer to them with.
const ERROR_RESPONSES: &[(&str, &str)] = &[
    (
        "BadRequest",
        "The request is wrong: the message names the field, query parameter or path segment",
    ),
    (
        "Unauthorized",
        "Missing, invalid or expired credentials (the message never says which part failed)",
    ),
    (
        "CsrfRefused",
        "A request with the session cookie that changes something lacks the page's token in `X-CSRF-Token`",
    ),
    ("PayloadTooLarge", "The request body is over the API's limit of 1 MiB"),
    (
        "RateLimited",
        "Too many failed credential checks from this address; `Retry-After` says when to try again",
    ),
    (
        "Internal",
        "The server failed to handle the request; the detail is in its log",
    ),
    (
        "Unavailable",
        "The server cannot do it now (database not writable, request timeout, limiter undecided); \
         nothing or not all was done, check before repeating; `Retry-After` may say when",
    ),
];

/// The README's "HTTP API" section on the project's page, where the API's
/// prose lives.
const README: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "#http-api");

/// The document as generated from the API router's annotations, with the
/// common parts added; no server URL yet. Built once.
fn generated() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, document) = crate::api::routes().split_for_parts();
        complete(document)
    })
}

/// The empty document the API router starts from: info, tags, security
/// schemes, the error schema and the shared error responses.
pub(crate) fn base() -> OpenApi {
    let description = format!(
        "The JSON API of restic-manager: everything the web UI does, for scripts and tools. \
         Authenticate with `Authorization: Bearer <token>`: a login session from \
         `POST /auth/login`, or an API token. Errors are `{{\"error\": {{\"code\", \"message\"}}}}` \
         with a fitting status; a 400 names the offending field. The README's \
         [HTTP API]({README}) section explains each route; `/api/docs` on the server \
         shows this document."
    );
    let mut components = ComponentsBuilder::new()
        .schema_from::<rm_protocol::api::ApiError>()
        .schema_from::<rm_protocol::api::ApiErrorDetail>();
    for (name, description) in ERROR_RESPONSES {
        components = components.response(*name, error_response(description));
    }
    let mut components = components.build();
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A login session's token (`POST /auth/login`) or an API token \
                     (`rmt.…`, made on the UI's API tokens page or `POST /api-tokens`)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::auth::SESSION_COOKIE,
            "The web UI's session cookie (HttpOnly, SameSite=Lax)",
        ))),
    );
    components.add_security_scheme(
        CSRF,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The page's CSRF token: with the session cookie, every request that changes something \
             must carry it",
        ))),
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("restic-manager API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(description))
                .build(),
        )
        .tags(Some(TAGS.iter().map(|(name, description)| {
            TagBuilder::new()
                .name(*name)
                .description(Some(*description))
                .build()
        })))
        .components(Some(components))
        .build()
}

fn error_response(description: &str) -> ApiResponse {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(
                    rm_protocol::api::ApiError::name(),
                )))
                .build(),
        )
        .build()
}

/// Adds to every operation the error responses it can get besides its
/// own: 401 and 429 when it needs credentials, 403 when it also needs the
/// CSRF header with the cookie, 400 when it has parameters or a body, 413
/// with a body, and 500 and 503 always. A status the handler's annotation
/// names keeps the handler's description.
fn complete(mut document: OpenApi) -> OpenApi {
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_common_errors(operation);
        }
    }
    document
}

fn add_common_errors(operation: &mut Operation) {
    let schemes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| {
            value
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    let authenticated = !schemes.is_empty();
    let csrf = schemes.iter().any(|s| s == CSRF);
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = operation.request_body.is_some();
    let mut add = |status: &str, name: &str, when: bool| {
        if when {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    };
    add("400", "BadRequest", has_params || has_body);
    add("401", "Unauthorized", authenticated);
    add("403", "CsrfRefused", csrf);
    add("413", "PayloadTooLarge", has_body);
    add("429", "RateLimited", authenticated);
    add("500", "Internal", true);
    add("503", "Unavailable", true);
}

/// The generated document as JSON, its descriptions made plain Markdown.
/// Built once.
fn generated_json() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| match serde_json::to_value(generated()) {
        Ok(mut json) => {
            plain_descriptions(&mut json);
            json
        }
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document cannot be serialized");
            Value::Null
        }
    })
}

/// Rust doc comments become the document's descriptions; their intra-doc
/// links (`` [`HostView`] ``, `` [`crate::params`] ``) point nowhere for
/// an API client, so they are left as code spans.
fn plain_descriptions(node: &mut Value) {
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(text) if key == "description" || key == "summary" => {
                        *text = without_doc_links(text);
                    }
                    other => plain_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_descriptions),
        _ => {}
    }
}

/// `` [`x`] `` → `` `x` `` unless a Markdown link target `(` follows.
fn without_doc_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let after = &rest[start + 1..];
        let Some(end) = after.find("`]") else {
            break;
        };
        let code = &after[..end + 1];
        let tail = &after[end + 2..];
        out.push_str(&rest[..start]);
        if tail.starts_with('(') {
            out.push('[');
            out.push_str(code);
            out.push(']');
        } else {
            out.push_str(code);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The document as served by a server reachable at `public_url`: its
/// server URL is `<public_url>/api/v1`, so paths read `/hosts/{id}`.
pub(crate) fn document(public_url: &str) -> Value {
    let mut document = generated_json().clone();
    if let Value::Object(map) = &mut document {
        map.insert(
            "servers".to_owned(),
            serde_json::json!([{
                "url": format!("{}/api/v1", public_url.trim_end_matches('/')),
                "description": "this server's API",
            }]),
        );
    }
    document
}

/// Every operation of `/api/v1` as `(method, path template)`, the path
/// relative to `/api/v1` exactly as the document has it (`/hosts/{id}`),
/// sorted. Built from the same generated document the server serves, so
/// tests can walk every route (an access rule per operation, say) and a
/// new route cannot be left out.
pub fn api_operations() -> Vec<(Method, String)> {
    let mut operations = Vec::new();
    for (path, item) in &generated().paths.paths {
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ] {
            if operation.is_some() {
                operations.push((method, path.clone()));
            }
        }
    }
    operations.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    operations
}

const VIEWER_HTML: &str = include_str!("../../assets/api-docs.html");
const VIEWER_JS: &str = include_str!("../../assets/api-docs.js");

/// `GET /api/docs` (the viewer page) and `GET /api/docs/viewer.js` (its
/// script): no login, nothing from another host; the page reads
/// `/api/v1/openapi.json`.
pub(crate) fn viewer_router() -> Router<AppState> {
    Router::new()
        .route("/api/docs", get(viewer_page))
        .route("/api/docs/viewer.js", get(viewer_script))
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            axum::http::HeaderValue::from_static("DENY"),
        ))
}

async fn viewer_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        VIEWER_HTML,
    )
        .into_response()
}

async fn viewer_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        VIEWER_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn served() -> Value {
        document("https://backup.example.net:8443/")
    }

    #[test]
    fn doc_links_become_code_spans_and_markdown_links_stay() {
        assert_eq!(
            without_doc_links("like [`RepositoryConfig`], see [`crate::params`]."),
            "like `RepositoryConfig`, see `crate::params`."
        );
        assert_eq!(
            without_doc_links("the [`README`](https://x.invalid/#api) and [`a` b"),
            "the [`README`](https://x.invalid/#api) and [`a` b"
        );
        let doc = served();
        let text = doc.to_string();
        assert!(
            !text.contains("[`"),
            "an intra-doc link is left in the document"
        );
    }

    /// Every `$ref` string anywhere under `node`.
    fn refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
        match node {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }

    /// The operations of the served document: (method, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), operation));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_with_this_servers_url_and_version() {
        let doc = served();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "restic-manager API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let description = doc["info"]["description"].as_str().unwrap();
        assert!(
            description.contains(&format!(
                "[HTTP API]({}#http-api)",
                env!("CARGO_PKG_REPOSITORY")
            )),
            "{description}"
        );
        assert!(!env!("CARGO_PKG_REPOSITORY").is_empty());
        assert_eq!(
            doc["servers"][0]["url"],
            "https://backup.example.net:8443/api/v1"
        );
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["session"]["name"], crate::auth::SESSION_COOKIE);
        assert_eq!(schemes["csrf"]["in"], "header");
        assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");
    }

    #[test]
    fn every_ref_resolves() {
        let doc = served();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 100, "only {} $refs", found.len());
        for target in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("`{target}` is not a local reference"));
            assert!(
                doc.pointer(pointer).is_some(),
                "`{target}` points at nothing"
            );
        }
    }

    #[test]
    fn every_operation_has_a_unique_id_a_known_tag_a_summary_and_responses() {
        let doc = served();
        let known: BTreeSet<&str> = TAGS.iter().map(|(name, _)| *name).collect();
        let mut ids = BTreeMap::new();
        for (method, path, operation) in operations(&doc) {
            let what = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{what} has no operationId");
            if let Some(other) = ids.insert(id.to_owned(), what.clone()) {
                panic!("{what} and {other} share the operationId `{id}`");
            }
            let tags = operation["tags"].as_array().unwrap();
            assert_eq!(tags.len(), 1, "{what}: {tags:?}");
            assert!(
                known.contains(tags[0].as_str().unwrap()),
                "{what}: {tags:?}"
            );
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{what} has no summary"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{what} documents no success: {responses:?}"
            );
            assert!(responses.contains_key("500"), "{what}");
            // Path parameters are exactly the template's.
            let mut in_path: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            in_path.sort_unstable();
            let mut in_template: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            in_template.sort_unstable();
            assert_eq!(in_path, in_template, "{what}");
        }
        assert_eq!(ids.len(), api_operations().len());
    }

    #[test]
    fn authenticated_operations_document_their_credentials_and_errors() {
        let doc = served();
        let public = [
            ("post", "/auth/login"),
            ("post", "/agents/enroll"),
            ("get", "/openapi.json"),
        ];
        for (method, path, operation) in operations(&doc) {
            let what = format!("{method} {path}");
            let responses = operation["responses"].as_object().unwrap();
            if public.contains(&(method.as_str(), path.as_str())) {
                assert!(operation.get("security").is_none(), "{what}");
                continue;
            }
            let security = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{what} has no security"));
            let schemes: Vec<Vec<&str>> = security
                .iter()
                .map(|r| r.as_object().unwrap().keys().map(String::as_str).collect())
                .collect();
            // Bearer alone, or the cookie (with the CSRF header unless the
            // request only reads): what `Operator` accepts.
            let cookie: Vec<&str> = if method == "get" {
                vec!["session"]
            } else {
                vec!["csrf", "session"]
            };
            assert_eq!(schemes, vec![vec!["bearer"], cookie], "{what}");
            assert!(responses.contains_key("401"), "{what}");
            assert_eq!(responses.contains_key("403"), method != "get", "{what}");
        }
    }

    #[test]
    fn the_operation_list_is_the_documents() {
        let operations = api_operations();
        assert!(operations.contains(&(Method::GET, "/hosts/{id}".to_owned())));
        assert!(operations.contains(&(Method::PATCH, "/hosts/{id}".to_owned())));
        assert!(operations.contains(&(Method::GET, "/openapi.json".to_owned())));
        let doc = served();
        assert_eq!(operations.len(), self::operations(&doc).len());
        let mut sorted = operations.clone();
        sorted.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
        sorted.dedup();
        assert_eq!(sorted, operations);
    }

    /// `routes!` puts a handler in the router and its operation in the
    /// document together; a plain `.route(` (or a merged or nested plain
    /// router) in the API's sources would serve a route the document does
    /// not have.
    #[test]
    fn the_api_router_registers_routes_only_through_routes_macro() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            read += 1;
            for forbidden in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".merge(",
                "Router::new(",
            ] {
                assert!(
                    !source.contains(forbidden),
                    "{} uses `{forbidden}`: register API routes with `.routes(routes!(…))` and a \
                     `#[utoipa::path]` on the handler, so the OpenAPI document has them",
                    path.display()
                );
            }
        }
        assert!(read > 10, "read only {read} files in {}", dir.display());
    }

    /// `(METHOD, /path)` pairs of the README's "HTTP API" table: the first
    /// cell of each row, e.g. `` `GET/PUT/DELETE /policies/{id}` `` or
    /// `` `PUT /hosts/{id}/repository` `{…}` · `GET` `` (a bare method
    /// after `·` means the same path).
    fn readme_operations() -> BTreeSet<(String, String)> {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let section = readme
            .split("### HTTP API")
            .nth(1)
            .expect("the README has an `### HTTP API` section");
        let table = section
            .split("| method, path |")
            .nth(1)
            .expect("the HTTP API section has a `| method, path |` table");
        let mut out = BTreeSet::new();
        for row in table.lines().skip(2) {
            let Some(row) = row.strip_prefix("| ") else {
                break;
            };
            let cell = row.split(" | ").next().unwrap_or_default();
            let mut path = String::new();
            for part in cell.split(" · ") {
                let Some(code) = part.strip_prefix('`').and_then(|p| p.split('`').next()) else {
                    continue;
                };
                let (methods, rest) = code.split_once(' ').unwrap_or((code, ""));
                if !rest.is_empty() {
                    path = rest.split('?').next().unwrap_or_default().to_owned();
                }
                assert!(!path.is_empty(), "README row without a path: {row}");
                for method in methods.split('/') {
                    assert!(
                        ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method),
                        "README row `{row}`: `{method}` is not a method"
                    );
                    out.insert((method.to_owned(), path.clone()));
                }
            }
        }
        assert!(out.len() > 40, "read only {} README operations", out.len());
        out
    }

    #[test]
    fn the_readme_lists_exactly_the_documented_operations() {
        let readme = readme_operations();
        let documented: BTreeSet<(String, String)> = api_operations()
            .into_iter()
            .map(|(method, path)| (method.to_string(), path))
            .collect();
        let undocumented: Vec<_> = readme.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "the README's HTTP API table lists operations the OpenAPI document lacks: {undocumented:?}"
        );
        let unlisted: Vec<_> = documented.difference(&readme).collect();
        assert!(
            unlisted.is_empty(),
            "operations missing from the README's HTTP API table: {unlisted:?}"
        );
    }
}
