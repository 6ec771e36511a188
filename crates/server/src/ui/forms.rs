//! The host page's job forms — "Back up now" and "Add schedule" — and the
//! schedule rows of the policy form ([`super::policies`]) turned into job
//! params on the server, so operators fill in fields (paths one
//! per line, excludes, tags, a retention preset or keep-* counts, the
//! backup options, bandwidth limits) instead of writing JSON.
//!
//! The page's script posts the form (urlencoded, with the page's CSRF
//! token in `X-CSRF-Token`) to `POST /hosts/{id}/backup` or
//! `POST /hosts/{id}/schedules`. Only the fields of the chosen kind are
//! read; the params they make go through the JSON API's own handlers (the
//! same validation in [`rm_protocol::params`], the same audit entries). A
//! refusal answers the API's error plus `field`, the form field it is
//! about, so the page shows the message next to that field and keeps
//! what was typed.

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rm_protocol::api::{CreateJob, ScheduleRequest};
use rm_protocol::JobKind;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{self, ApiError, ApiJson, ApiPath, Operator};
use crate::audit::Client;
use crate::state::AppState;

/// Every field either form may send; each kind reads its own. Text as
/// typed: checkboxes are present (`on`) or absent, lists are one item a
/// line, numbers are digits (anything else is passed on for the params
/// rules to refuse, naming the field).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JobForm {
    pub(super) kind: String,
    cron: String,
    timezone: String,
    jitter_seconds: String,
    paths: String,
    excludes: String,
    iexcludes: String,
    tags: String,
    exclude_if_present: String,
    exclude_larger_than: String,
    exclude_caches: Option<String>,
    one_file_system: Option<String>,
    skip_if_unchanged: Option<String>,
    limit_upload_kib: String,
    limit_download_kib: String,
    /// A preset's name, or `custom` for the keep_* fields.
    retention: String,
    keep_last: String,
    keep_hourly: String,
    keep_daily: String,
    keep_weekly: String,
    keep_monthly: String,
    keep_yearly: String,
    keep_within: String,
    prune: Option<String>,
    read_data_subset: String,
    /// `rotate`, or empty for a fixed `read_data_subset` (or none).
    read_data: String,
    /// Runs in a rotating check's cycle.
    cycle: String,
    sample_files: String,
    max_bytes: String,
}

/// The value of the `retention` choice that uses the keep_* fields.
const CUSTOM: &str = "custom";

impl JobForm {
    /// The params of a `kind` job from this form's fields.
    pub(super) fn params(&self, kind: JobKind) -> Value {
        let mut params = Map::new();
        let mut list = |name: &str, text: &str, always: bool| {
            let items: Vec<Value> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(Value::from)
                .collect();
            if always || !items.is_empty() {
                params.insert(name.to_owned(), Value::Array(items));
            }
        };
        match kind {
            JobKind::Backup => {
                list("paths", &self.paths, true);
                list("excludes", &self.excludes, false);
                list("iexcludes", &self.iexcludes, false);
                list("exclude_if_present", &self.exclude_if_present, false);
                list("tags", &self.tags, false);
                text(
                    &mut params,
                    "exclude_larger_than",
                    &self.exclude_larger_than,
                );
                for (name, checked) in [
                    ("exclude_caches", &self.exclude_caches),
                    ("one_file_system", &self.one_file_system),
                    ("skip_if_unchanged", &self.skip_if_unchanged),
                ] {
                    if checked.is_some() {
                        params.insert(name.to_owned(), Value::Bool(true));
                    }
                }
            }
            JobKind::Forget => {
                let retention = self.retention.trim();
                if retention.is_empty() || retention == CUSTOM {
                    for (name, value) in [
                        ("keep_last", &self.keep_last),
                        ("keep_hourly", &self.keep_hourly),
                        ("keep_daily", &self.keep_daily),
                        ("keep_weekly", &self.keep_weekly),
                        ("keep_monthly", &self.keep_monthly),
                        ("keep_yearly", &self.keep_yearly),
                    ] {
                        number(&mut params, name, value);
                    }
                    text(&mut params, "keep_within", &self.keep_within);
                } else {
                    params.insert("preset".to_owned(), Value::from(retention));
                }
                params.insert("prune".to_owned(), Value::Bool(self.prune.is_some()));
            }
            JobKind::Check => {
                text(&mut params, "read_data", &self.read_data);
                text(&mut params, "read_data_subset", &self.read_data_subset);
                number(&mut params, "cycle", &self.cycle);
            }
            JobKind::Copy => list("tags", &self.tags, false),
            JobKind::Drill => {
                number(&mut params, "sample_files", &self.sample_files);
                number(&mut params, "max_bytes", &self.max_bytes);
            }
            _ => {}
        }
        if matches!(
            kind,
            JobKind::Backup
                | JobKind::Forget
                | JobKind::Prune
                | JobKind::Check
                | JobKind::Copy
                | JobKind::Drill
        ) {
            number(&mut params, "limit_upload_kib", &self.limit_upload_kib);
            number(&mut params, "limit_download_kib", &self.limit_download_kib);
        }
        Value::Object(params)
    }
}

fn text(params: &mut Map<String, Value>, name: &str, value: &str) {
    let value = value.trim();
    if !value.is_empty() {
        params.insert(name.to_owned(), Value::from(value));
    }
}

/// Digits become a number; anything else stays text, which the params
/// rules refuse naming the field (one set of rules, not a second here).
fn number(params: &mut Map<String, Value>, name: &str, value: &str) {
    let value = value.trim();
    if value.is_empty() {
        return;
    }
    let value = match value.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(value),
    };
    params.insert(name.to_owned(), value);
}

impl JobForm {
    /// A form from `(field, value)` pairs, as a form with several schedule
    /// rows sends them once each row's prefix is taken off. Unknown fields
    /// are ignored, like the host forms' extra fields.
    pub(super) fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> JobForm {
        let map: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        // Every field is text or an optional text, so any map of strings
        // deserialises; the default covers the impossible rest.
        serde_json::from_value(Value::Object(map)).unwrap_or_default()
    }
}

/// The field of a policy form's schedule row that an error message about
/// that schedule is about (`cron`, `paths`, `retention`, …); its kind when
/// the message names no field.
pub(super) fn row_field(message: &str) -> String {
    form_field(message).unwrap_or_else(|| String::from("kind"))
}

/// The form fields that [`JobForm::params`] would turn into `params`: what
/// an edit form shows for a stored schedule. Lists become one item a line,
/// `true` a ticked box (`on`), numbers digits; a forget whose keep counts
/// are exactly a preset's shows that preset (stored params hold the
/// preset's counts, never its name).
pub(super) fn fields_from_params(kind: JobKind, params: &Value) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let Some(map) = params.as_object() else {
        return fields;
    };
    for (name, value) in map {
        let shown = match value {
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Value::Bool(true) => String::from("on"),
            Value::Bool(false) | Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        fields.push((name.clone(), shown));
    }
    if kind == JobKind::Forget {
        let keeps = KEEPS.map(|k| map.get(k).and_then(Value::as_u64));
        let preset = rm_protocol::params::RETENTION_PRESETS.iter().find(|p| {
            let f = p.params();
            let want = [
                f.keep_last,
                f.keep_hourly,
                f.keep_daily,
                f.keep_weekly,
                f.keep_monthly,
                f.keep_yearly,
            ];
            map.get("keep_within").is_none()
                && want.iter().zip(keeps).all(|(w, h)| w.map(u64::from) == h)
        });
        match preset {
            Some(p) => {
                fields.retain(|(name, _)| !KEEPS.contains(&name.as_str()));
                fields.push((String::from("retention"), p.name.to_owned()));
            }
            None => fields.push((String::from("retention"), CUSTOM.to_owned())),
        }
    }
    fields
}

/// The keep-count fields, in the order presets list them.
const KEEPS: [&str; 6] = [
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
];

/// The form field an API error message is about: its first `` `name` ``,
/// without `params.` and any `[index]` or `.key` (`params.excludes[1]` →
/// `excludes`, `labels.env` → `labels`).
/// A forget without any keep rule (`params`) and an unknown preset are
/// about the retention choice.
fn form_field(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    let name = name.strip_prefix("params.").unwrap_or(name);
    let name = name.split(['[', '.']).next().unwrap_or(name);
    let field = match name {
        "params" | "preset" => "retention",
        other => other,
    };
    Some(field.to_owned())
}

/// The API's answer; a 400 also names the form field it is about.
pub(super) fn answer<T: IntoResponse>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(done) => done.into_response(),
        Err(e) if e.status() == StatusCode::BAD_REQUEST => {
            let body = serde_json::json!({
                "error": {
                    "code": "bad_request",
                    "message": e.message(),
                    "field": form_field(e.message()),
                }
            });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /hosts/{id}/backup`: "Back up now" → 201 with the job.
pub(crate) async fn backup(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Path(host): Path<String>,
    Form(form): Form<JobForm>,
) -> Response {
    let request = CreateJob {
        kind: JobKind::Backup.as_str().to_owned(),
        params: form.params(JobKind::Backup),
    };
    answer(
        api::jobs::create(
            State(state),
            operator,
            client,
            ApiPath(host),
            ApiJson(request),
        )
        .await,
    )
}

/// `POST /hosts/{id}/schedules`: "Add schedule" → 201 with the schedule.
pub(crate) async fn schedule(
    State(state): State<AppState>,
    operator: Operator,
    client: Client,
    Path(host): Path<String>,
    Form(form): Form<JobForm>,
) -> Response {
    let jitter = form.jitter_seconds.trim();
    let jitter_seconds = match jitter {
        "" => 0,
        digits => match digits.parse::<u32>() {
            Ok(seconds) => seconds,
            Err(_) => {
                return answer::<()>(Err(ApiError::bad_request(format!(
                    "`jitter_seconds` must be a whole number of seconds, got `{digits}`"
                ))))
            }
        },
    };
    // An unknown kind makes no params; the API names `kind` as the problem.
    let params = form
        .kind
        .parse::<JobKind>()
        .map(|kind| form.params(kind))
        .unwrap_or(Value::Null);
    let timezone = Some(form.timezone.trim().to_owned()).filter(|z| !z.is_empty());
    let request = ScheduleRequest {
        kind: form.kind.trim().to_owned(),
        cron: form.cron.clone(),
        timezone,
        params,
        enabled: true,
        jitter_seconds,
    };
    answer(
        api::schedules::create(
            State(state),
            operator,
            client,
            ApiPath(host),
            ApiJson(request),
        )
        .await,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn form(pairs: &[(&str, &str)]) -> JobForm {
        let fields: Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        serde_json::from_value(Value::Object(fields)).unwrap()
    }

    #[test]
    fn a_backup_form_becomes_backup_params() {
        let f = form(&[
            ("paths", "/etc\n\n /srv \n"),
            ("excludes", "*.tmp"),
            ("iexcludes", "*.JPG"),
            ("exclude_if_present", ".nobackup"),
            ("tags", "nightly"),
            ("exclude_larger_than", " 500M "),
            ("exclude_caches", "on"),
            ("skip_if_unchanged", "on"),
            ("limit_upload_kib", "512"),
            ("limit_download_kib", ""),
            // Fields of other kinds are not read.
            ("keep_last", "3"),
            ("read_data_subset", "10%"),
        ]);
        assert_eq!(
            f.params(JobKind::Backup),
            json!({
                "paths": ["/etc", "/srv"],
                "excludes": ["*.tmp"],
                "iexcludes": ["*.JPG"],
                "exclude_if_present": [".nobackup"],
                "tags": ["nightly"],
                "exclude_larger_than": "500M",
                "exclude_caches": true,
                "skip_if_unchanged": true,
                "limit_upload_kib": 512,
            })
        );
        // No paths still sends the field, for the rules to name.
        assert_eq!(form(&[]).params(JobKind::Backup), json!({"paths": []}));
        // Not a number: passed on as text, refused by the params rules.
        assert_eq!(
            form(&[("paths", "/a"), ("limit_upload_kib", "fast")]).params(JobKind::Backup),
            json!({"paths": ["/a"], "limit_upload_kib": "fast"})
        );
    }

    #[test]
    fn retention_is_a_preset_or_keep_counts() {
        let preset = form(&[
            ("retention", "standard"),
            ("prune", "on"),
            ("keep_last", "3"),
        ]);
        assert_eq!(
            preset.params(JobKind::Forget),
            json!({"preset": "standard", "prune": true})
        );
        let custom = form(&[
            ("retention", "custom"),
            ("keep_daily", "7"),
            ("keep_within", "1y"),
            ("limit_download_kib", "100"),
        ]);
        assert_eq!(
            custom.params(JobKind::Forget),
            json!({"keep_daily": 7, "keep_within": "1y", "prune": false, "limit_download_kib": 100})
        );
        assert_eq!(
            form(&[("read_data_subset", "5%"), ("paths", "/x")]).params(JobKind::Check),
            json!({"read_data_subset": "5%"})
        );
        assert_eq!(
            form(&[
                ("read_data", "rotate"),
                ("cycle", "7"),
                ("read_data_subset", "")
            ])
            .params(JobKind::Check),
            json!({"read_data": "rotate", "cycle": 7})
        );
        assert_eq!(
            form(&[("limit_upload_kib", "64")]).params(JobKind::Prune),
            json!({"limit_upload_kib": 64})
        );
        assert_eq!(
            form(&[
                ("tags", "weekly\n\nmonthly"),
                ("paths", "/x"),
                ("limit_download_kib", "8")
            ])
            .params(JobKind::Copy),
            json!({"tags": ["weekly", "monthly"], "limit_download_kib": 8})
        );
    }

    #[test]
    fn stored_params_become_the_fields_that_make_them_again() {
        let cases = [
            (
                JobKind::Backup,
                json!({
                    "paths": ["/etc", "/srv"],
                    "excludes": ["*.tmp"],
                    "exclude_caches": true,
                    "exclude_larger_than": "500M",
                    "limit_upload_kib": 512,
                }),
            ),
            (
                JobKind::Forget,
                json!({"keep_daily": 5, "keep_within": "1y6m", "prune": true}),
            ),
            (JobKind::Forget, json!({"keep_daily": 7, "prune": false})),
            (JobKind::Check, json!({"read_data_subset": "10%"})),
            (JobKind::Check, json!({"read_data": "rotate", "cycle": 30})),
        ];
        for (kind, params) in cases {
            let fields = fields_from_params(kind, &params);
            let form = JobForm::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let mut again = form.params(kind);
            // `minimal` is 7 daily: shown as the preset, sent as its name.
            if again.get("preset") == Some(&json!("minimal")) {
                assert_eq!(params["keep_daily"], 7);
                again = json!({"keep_daily": 7, "prune": again["prune"]});
            }
            assert_eq!(again, params, "{kind:?} through {fields:?}");
        }
        // A preset's stored counts show as that preset.
        let standard =
            json!({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "prune": true});
        let fields = fields_from_params(JobKind::Forget, &standard);
        assert!(fields.contains(&(String::from("retention"), String::from("standard"))));
        assert!(
            !fields.iter().any(|(k, _)| k.starts_with("keep_")),
            "{fields:?}"
        );
    }

    #[test]
    fn errors_name_the_form_field() {
        let field = |m: &str| form_field(m).unwrap_or_default();
        assert_eq!(field("`params.excludes[1]` must not be empty"), "excludes");
        assert_eq!(
            field("`params.limit_upload_kib` must be at least 1"),
            "limit_upload_kib"
        );
        assert_eq!(
            field("`params` must set at least one of keep_last, …"),
            "retention"
        );
        assert_eq!(field("`params.preset` `x` is not a preset"), "retention");
        assert_eq!(field("`cron`/`timezone`: bad cron"), "cron");
        assert_eq!(
            field("`jitter_seconds` must be at most 86400"),
            "jitter_seconds"
        );
        assert_eq!(field("`labels.env` value \"PROD\" …"), "labels");
        assert_eq!(form_field("host is offline"), None);
    }
}
