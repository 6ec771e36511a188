//! `PUT/GET /api/v1/hosts/{id}/repository`: where a host backs up to. The
//! password is write-only: it is sealed at rest and never shown back.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rm_core::JobId;
use rm_protocol::api::RepositoryView;
use rm_protocol::{CopyTarget, RepositoryConfig};

use super::hosts::parse_host_id;
use super::ApiErrorBody;
use super::{ApiError, ApiJson, ApiPath, Operator};
use crate::audit::{Action, Audit, Client, Target};
use crate::repositories::{self, RepositoryError};
use crate::state::AppState;

impl From<RepositoryError> for ApiError {
    fn from(e: RepositoryError) -> ApiError {
        match e {
            RepositoryError::Invalid(message) => ApiError::bad_request(message),
            RepositoryError::HostNotFound(_) => ApiError::not_found(e.to_string()),
            RepositoryError::Refused(_) => ApiError::conflict(e.to_string()),
            RepositoryError::Store(e) => e.into(),
            RepositoryError::Job(e) => e.into(),
            RepositoryError::Unsealable(_) => ApiError::internal(e),
        }
    }
}

/// The body of `PUT /repository`: like [`RepositoryConfig`], but `env`
/// left out keeps the variables already set (the UI never shows their
/// values, so it cannot send them back), and so does `copy_to` left out
/// (`null` removes it).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepositoryRequest {
    /// restic's repository string.
    url: String,
    /// The repository password (sealed at rest, never shown back here).
    password: String,
    /// Extra environment for restic (backend keys; an allow-list); left
    /// out, the stored variables stay.
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
    /// The second repository `copy` jobs copy to. Left out: keep;
    /// `null`: remove; an object: set.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CopyTargetRequest>)]
    copy_to: Option<Option<CopyTargetRequest>>,
}

/// `copy_to` of `PUT /repository`: its `env` left out keeps the
/// variables the stored `copy_to` has.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopyTargetRequest {
    /// restic's repository string.
    url: String,
    /// Its password.
    password: String,
    /// Extra environment for its backend; left out, the stored ones stay.
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`,
/// through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Set a host's repository.
///
/// `PUT /api/v1/hosts/{id}/repository` `{url, password, env?, copy_to?}` → 204.
/// Pushed to the agent at once if it is connected; an `init` job follows.
#[utoipa::path(
    put,
    path = "/hosts/{id}/repository",
    tag = "repository",
    operation_id = "set_repository",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    request_body = RepositoryRequest,
    responses(
        (status = 204, description = "Set and pushed to the agent; an `init` job follows"),
        (status = 404, description = "No such host", body = ApiErrorBody),
        (status = 409, description = "Refused (a shared repository's rules)", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(host): ApiPath<String>,
    ApiJson(req): ApiJson<RepositoryRequest>,
) -> Result<StatusCode, ApiError> {
    let host_id = parse_host_id(&host)?;
    let masked = |field: &str, url: &str| {
        if url.contains(":***@") {
            Err(ApiError::bad_request(format!(
                "`{field}` contains a masked password (`***`); type the real one"
            )))
        } else {
            Ok(())
        }
    };
    masked("url", &req.url)?;
    if let Some(Some(copy)) = &req.copy_to {
        masked("copy_to.url", &copy.url)?;
    }
    let env_given = req.env.is_some();
    let stored = repositories::get(&state, host_id).await.ok().flatten();
    let env = match req.env {
        Some(env) => env,
        None => stored.as_ref().map(|c| c.env.clone()).unwrap_or_default(),
    };
    let stored_copy = stored.and_then(|c| c.copy_to);
    let copy_to = match req.copy_to {
        None => stored_copy,
        Some(None) => None,
        Some(Some(copy)) => Some(CopyTarget {
            url: copy.url,
            password: copy.password,
            env: match copy.env {
                Some(env) => env,
                None => stored_copy.map(|c| c.env).unwrap_or_default(),
            },
        }),
    };
    let config = RepositoryConfig {
        url: req.url,
        password: req.password,
        env,
        copy_to,
    };
    let url = rm_core::redact::redact_url(&config.url);
    let copy_to = config.copy_to.as_ref().map(|c| {
        serde_json::json!({
            "url": rm_core::redact::redact_url(&c.url),
            "env_keys": c.env.keys().collect::<Vec<_>>(),
        })
    });
    let by = Audit::by(&state, &operator, &client).await;
    // The URL's password masked, variable names only: no secret in the log.
    let entry_for = |init_job: &JobId| {
        by.entry(
            Action::RepositorySet,
            Some(Target::new("host", host_id)),
            serde_json::json!({
                "url": url,
                "env_keys": config.env.keys().collect::<Vec<_>>(),
                "env_kept": !env_given,
                "copy_to": copy_to,
                "init_job_id": init_job.to_string(),
            }),
        )
    };
    repositories::set(&state, host_id, &config, Some(&entry_for)).await?;
    tracing::info!(%host_id, by = %operator.user_id, %url, "repository set");
    Ok(StatusCode::NO_CONTENT)
}

/// Show a host's repository.
///
/// `GET /api/v1/hosts/{id}/repository` → `{url, env_keys, copy_to?, updated_at}`.
#[utoipa::path(
    get,
    path = "/hosts/{id}/repository",
    tag = "repository",
    operation_id = "show_repository",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The settings, without the password or variable values", body = RepositoryView),
        (status = 404, description = "No such host, or it has no repository", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<RepositoryView>, ApiError> {
    let host_id = parse_host_id(&host)?;
    if state.store().host(host_id).await?.is_none() {
        return Err(RepositoryError::HostNotFound(host_id).into());
    }
    repositories::view(&state, host_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("host `{host_id}` has no repository set")))
}

/// Remove a host's own repository settings.
///
/// `DELETE /api/v1/hosts/{id}/repository` → 204: removes the host's own
/// settings, so its policy's repository applies again (or none: the host
/// is then unconfigured). 404 when the host has no own settings (a
/// policy's are changed on the policy).
#[utoipa::path(
    delete,
    path = "/hosts/{id}/repository",
    tag = "repository",
    operation_id = "delete_repository",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 204, description = "Removed; the policy's repository applies again, if any"),
        (status = 404, description = "No such host, or no settings of its own", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(host): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let host_id = parse_host_id(&host)?;
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::RepositoryDelete,
        Some(Target::new("host", host_id)),
        serde_json::json!({}),
    );
    if !repositories::delete_own(&state, host_id, Some(&entry)).await? {
        return Err(ApiError::not_found(format!(
            "host `{host_id}` has no repository settings of its own (a policy's are changed on the policy)"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The repository password, shown to an operator who asks for it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PasswordShown {
    /// The password restic needs to open the repository.
    password: String,
}

/// Show a host's repository password.
///
/// `GET /api/v1/hosts/{id}/repository/password`: the password restic
/// needs to open the host's repository by hand (generated ones exist
/// nowhere else). Every time it is shown is in the audit log.
#[utoipa::path(
    get,
    path = "/hosts/{id}/repository/password",
    tag = "repository",
    operation_id = "show_repository_password",
    params(("id" = String, Path, description = "The host's id (ULID)")),
    responses(
        (status = 200, description = "The password (audited)", body = PasswordShown),
        (status = 404, description = "No such host, or it has no repository", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("session" = [])),
)]
pub(crate) async fn password(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    ApiPath(host): ApiPath<String>,
) -> Result<Json<PasswordShown>, ApiError> {
    let host_id = parse_host_id(&host)?;
    if state.store().host(host_id).await?.is_none() {
        return Err(RepositoryError::HostNotFound(host_id).into());
    }
    let config = repositories::get(&state, host_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host `{host_id}` has no repository set")))?;
    let entry = Audit::by(&state, &operator, &client).await.entry(
        Action::RepositoryPasswordShow,
        Some(Target::new("host", host_id)),
        serde_json::json!({"url": rm_core::redact::redact_url(&config.url)}),
    );
    state.store().record_audit(&entry).await?;
    Ok(Json(PasswordShown {
        password: config.password,
    }))
}
