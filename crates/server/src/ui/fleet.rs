//! The fleet's forms: labels on the enrol page, a host's labels, name,
//! freshness and offline threshold on its page, and bulk jobs on the
//! dashboard's filtered selection. Like the job forms ([`super::forms`])
//! they take fields as typed — labels as `key=value, …` text, read by
//! [`Labels::parse_pairs`] — and go through the services the JSON API uses (the same checks,
//! audit entries and policy re-application). A refusal names the form
//! field it is about.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use rm_core::Labels;
use rm_protocol::api::{BulkJobRequest, CreateEnrollmentToken, HostView, PatchHost};
use rm_protocol::JobKind;
use serde::Deserialize;
use serde_json::Value;

use super::forms::{answer, JobForm};
use crate::api::{self, ApiError, ApiJson, Operator};
use crate::audit::{Audit, Client};
use crate::policies::Fleet;
use crate::state::AppState;

/// `key=value, …` text as a label map; an error names `field`.
fn labels(field: &str, text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    Labels::parse_pairs(field, text)
        .map(|l| l.as_map().clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Digits as a number, empty as `None`; anything else is refused naming
/// `field`.
fn optional_number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, ApiError> {
    match text.trim() {
        "" => Ok(None),
        digits => digits.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("`{field}` must be a whole number, got `{digits}`"))
        }),
    }
}

/// The enrol page's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EnrollForm {
    name: String,
    ttl_seconds: String,
    labels: String,
}

/// `POST /enroll`: an enrolment token whose host gets the labels typed →
/// 201 with the token and the command to run.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Form(form): Form<EnrollForm>,
) -> Response {
    let request = (|| -> Result<CreateEnrollmentToken, ApiError> {
        Ok(CreateEnrollmentToken {
            name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
            ttl_seconds: optional_number("ttl_seconds", &form.ttl_seconds)?,
            labels: labels("labels", &form.labels)?,
        })
    })();
    let result = match request {
        Ok(request) => {
            api::enrollment::create_token(State(state), operator, client, ApiJson(request)).await
        }
        Err(e) => Err(e),
    };
    answer(result)
}

/// The host page's settings fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct HostSettingsForm {
    name: String,
    labels: String,
    /// Empty: the host has no freshness of its own (its policy's or the
    /// default applies).
    freshness_seconds: String,
    /// Empty: the host has no offline threshold of its own.
    offline_seconds: String,
}

/// `POST /hosts/{id}/settings`: the host's name, labels (replacing the
/// old ones), own freshness and own offline threshold → 200 with the host as the API shows it.
pub(crate) async fn host_settings(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Path(host): Path<String>,
    Form(form): Form<HostSettingsForm>,
) -> Response {
    let result = async {
        let id = api::hosts::parse_host_id(&host)?;
        let request = PatchHost {
            name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
            labels: Some(labels("labels", &form.labels)?),
            freshness_seconds: Some(optional_number(
                "freshness_seconds",
                &form.freshness_seconds,
            )?),
            offline_seconds: Some(optional_number("offline_seconds", &form.offline_seconds)?),
        };
        let by = Audit::by(&state, &operator, &client).await;
        let host = crate::hosts::patch(&state, id, &request, Some(&by)).await?;
        Ok::<Json<HostView>, ApiError>(Json(Fleet::load(&state).await?.host_view(host)))
    }
    .await;
    answer(result)
}

/// A bulk form: the dashboard's filter (as shown), and the job's fields
/// as the host page's job forms have them.
#[derive(Debug, Deserialize)]
pub(crate) struct BulkForm {
    #[serde(default)]
    labels: String,
    #[serde(flatten)]
    job: JobForm,
}

/// `POST /bulk`: one job on every online host the filter matches (the
/// same service as `POST /api/v1/jobs`) → 201 with the jobs started and
/// the hosts skipped, with why.
pub(crate) async fn bulk(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Form(form): Form<BulkForm>,
) -> Response {
    let selector = match labels("labels", &form.labels) {
        Ok(selector) => selector,
        Err(e) => return answer::<StatusCode>(Err(e)),
    };
    // An unknown kind makes no params; the service names `kind`.
    let params = form
        .job
        .kind
        .parse::<JobKind>()
        .map(|kind| form.job.params(kind))
        .unwrap_or(Value::Null);
    let request = BulkJobRequest {
        selector,
        kind: form.job.kind.trim().to_owned(),
        params,
        max_parallel: None,
    };
    answer(api::jobs::bulk_create(State(state), operator, client, ApiJson(request)).await)
}

/// The fleet selection's "Upgrade agents" form: the dashboard's filter.
#[derive(Debug, Deserialize)]
pub(crate) struct UpgradeForm {
    #[serde(default)]
    labels: String,
}

/// `POST /bulk/upgrade`: upgrade the agents of every host the filter
/// matches (the same service as `POST /api/v1/agents/upgrade`).
pub(crate) async fn bulk_upgrade(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Form(form): Form<UpgradeForm>,
) -> Response {
    let selector = match labels("labels", &form.labels) {
        Ok(selector) => selector,
        Err(e) => return answer::<StatusCode>(Err(e)),
    };
    let request = rm_protocol::api::AgentUpgradeRequest {
        selector: Some(selector),
        host_id: None,
    };
    answer(api::upgrade_agents(State(state), operator, client, ApiJson(request)).await)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bulk_form_carries_the_filter_and_the_job_fields() {
        let form: BulkForm =
            serde_urlencoded::from_str("labels=env%3Dprod&kind=forget&retention=standard&prune=on")
                .unwrap();
        assert_eq!(form.labels, "env=prod");
        assert_eq!(
            form.job.params(JobKind::Forget),
            json!({"preset": "standard", "prune": true})
        );
        let form: BulkForm =
            serde_urlencoded::from_str("kind=backup&paths=%2Fetc%0A%2Fsrv").unwrap();
        assert_eq!(form.labels, "");
        assert_eq!(
            form.job.params(JobKind::Backup),
            json!({"paths": ["/etc", "/srv"]})
        );
    }

    #[test]
    fn label_text_is_checked_naming_the_field() {
        assert_eq!(
            labels("labels", " env=prod , role=db").unwrap(),
            BTreeMap::from([
                ("env".to_owned(), "prod".to_owned()),
                ("role".to_owned(), "db".to_owned())
            ])
        );
        assert!(labels("labels", "").unwrap().is_empty());
        for bad in ["env", "env=PROD", "a=1,a=2"] {
            let e = labels("labels", bad).unwrap_err();
            assert!(e.message().starts_with("`labels"), "{bad}: {}", e.message());
        }
        assert_eq!(optional_number::<u64>("ttl_seconds", " ").unwrap(), None);
        assert_eq!(
            optional_number::<u64>("ttl_seconds", "600").unwrap(),
            Some(600)
        );
        assert!(optional_number::<u64>("ttl_seconds", "1h")
            .unwrap_err()
            .message()
            .contains("`ttl_seconds`"));
    }
}
