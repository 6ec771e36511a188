//! What a host gets, computed in one place: which policy wins for it, the
//! repository its policy's template gives it, and which schedule rows the
//! policy gives it beside its own. Pure functions over values the
//! reconciler loaded, so every rule here is unit-tested and the pushes,
//! the API and the UI can never disagree.
//!
//! Precedence: the host's own settings win over its policy's. Its own
//! repository settings replace the policy's; its own schedules of a kind
//! (`backup`, `check`, …) replace the policy's schedules of that kind; its
//! own freshness replaces the policy's. Among matching policies the highest
//! `priority` wins, ties going to the oldest.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rm_core::{HostId, Labels, PolicyId, ScheduleId};
use rm_store::{PolicyRecord, PolicyScheduleRecord, ScheduleRecord};

/// The freshness a host has when neither it nor its policy sets one: a
/// daily backup may run late by a couple of hours before anyone is told.
pub const DEFAULT_FRESHNESS_SECONDS: u64 = 26 * 3600;

/// How long a host may be offline, when neither it nor its policy says,
/// before `host_offline` fires: long enough for a reboot or an upgrade.
pub const DEFAULT_OFFLINE_SECONDS: u64 = 3600;

/// The placeholders a repository template may hold.
pub const PLACEHOLDERS: [&str; 2] = ["{host}", "{host_id}"];

/// The policies whose selectors match `labels`: the winner first, then the
/// ones it outranked, in rank order.
pub fn ranked<'p>(policies: &'p [PolicyRecord], labels: &Labels) -> Vec<&'p PolicyRecord> {
    let mut matching: Vec<&PolicyRecord> = policies
        .iter()
        .filter(|p| p.selector.matches(labels))
        .collect();
    matching.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
    matching
}

/// The policy that applies to a host with `labels`.
pub fn winner<'p>(policies: &'p [PolicyRecord], labels: &Labels) -> Option<&'p PolicyRecord> {
    ranked(policies, labels).into_iter().next()
}

/// Why a repository template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Checks a template's placeholders: only [`PLACEHOLDERS`], every brace
/// part of one.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        match PLACEHOLDERS.iter().find(|p| after.starts_with(**p)) {
            Some(p) => rest = &after[p.len()..],
            None => {
                let shown: String = after.chars().take_while(|c| *c != '}').collect();
                return Err(TemplateError(format!(
                    "unknown placeholder `{shown}}}`: only {{host}} and {{host_id}} are known"
                )));
            }
        }
    }
    if rest.contains('}') || template.matches('}').count() != template.matches('{').count() {
        return Err(TemplateError(String::from(
            "has a `}` that closes no placeholder",
        )));
    }
    Ok(())
}

/// A host name as it goes into a repository URL: letters, digits, `.`, `_`
/// and `-` are kept, anything else (`/`, spaces, `@`, `:`) becomes `-`, and
/// a leading `-` or `.` becomes `_`, so no name can leave its folder, name
/// a parent folder, or turn the URL into a flag.
pub fn url_safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.starts_with(['-', '.']) {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The template with the host's values put in.
pub fn expand(template: &str, host_name: &str, host_id: HostId) -> String {
    template
        .replace("{host_id}", &host_id.to_string())
        .replace("{host}", &url_safe_name(host_name))
}

/// Whether every host expands `template` to its own repository.
pub fn is_per_host(template: &str) -> bool {
    PLACEHOLDERS.iter().any(|p| template.contains(p))
}

/// A repository's identity: its URL without any password in it and
/// without trailing slashes. Hosts with the same identity share the
/// repository.
pub fn repository_key(url: &str) -> String {
    let redacted = rm_core::redact::redact_url(url.trim());
    let trimmed = redacted.trim_end_matches('/');
    if trimmed.is_empty() {
        redacted
    } else {
        trimmed.to_owned()
    }
}

/// The effective freshness and where it comes from (`host`, `policy` or
/// `default`).
pub fn freshness(own: Option<u64>, policy: Option<&PolicyRecord>) -> (u64, &'static str) {
    host_then_policy(
        own,
        policy.and_then(|p| p.freshness_seconds),
        DEFAULT_FRESHNESS_SECONDS,
    )
}

/// The effective offline threshold (`host_offline`) and where it comes
/// from (`host`, `policy` or `default`).
pub fn offline_after(own: Option<u64>, policy: Option<&PolicyRecord>) -> (u64, &'static str) {
    host_then_policy(
        own,
        policy.and_then(|p| p.offline_seconds),
        DEFAULT_OFFLINE_SECONDS,
    )
}

/// Whether a host whose last backup that saved a snapshot finished at
/// `last_success` is protected at `now` with `freshness_seconds` (the
/// rule the store's `ProtectedAt` condition applies in SQL).
pub fn protected(
    last_success: Option<DateTime<Utc>>,
    freshness_seconds: u64,
    now: DateTime<Utc>,
) -> bool {
    last_success.is_some_and(|at| {
        (now - at).num_seconds() <= i64::try_from(freshness_seconds).unwrap_or(i64::MAX)
    })
}

/// The precedence of a host setting: its own, its policy's, the default.
fn host_then_policy(own: Option<u64>, policy: Option<u64>, default: u64) -> (u64, &'static str) {
    match (own, policy) {
        (Some(own), _) => (own, "host"),
        (None, Some(from_policy)) => (from_policy, "policy"),
        (None, None) => (default, "default"),
    }
}

/// The schedule rows a policy gives one host, compared with the rows
/// policies gave it so far.
#[derive(Debug, Default, PartialEq)]
pub struct ScheduleDiff {
    /// Rows to add or replace.
    pub upsert: Vec<ScheduleRecord>,
    /// Rows to remove.
    pub delete: Vec<ScheduleId>,
}

/// What `policy` (if any) gives `host` as schedule rows, given the kinds of
/// its own schedules (the host's own win) and the rows policies gave it so
/// far (`current`). A row that already says the same is left alone; one
/// whose policy schedule changed keeps its id (the agent keeps its
/// history); one no longer given is removed.
pub fn schedule_diff(
    host: HostId,
    policy: Option<&PolicyRecord>,
    own_kinds: &[String],
    current: &[ScheduleRecord],
    now: DateTime<Utc>,
) -> ScheduleDiff {
    let wanted: Vec<(PolicyId, &PolicyScheduleRecord)> = policy
        .map(|p| {
            p.schedules
                .iter()
                .filter(|s| !own_kinds.contains(&s.kind))
                .map(|s| (p.id, s))
                .collect()
        })
        .unwrap_or_default();
    let mut by_origin: HashMap<(PolicyId, ScheduleId), &ScheduleRecord> = current
        .iter()
        .filter_map(|row| row.policy.map(|origin| (origin, row)))
        .collect();
    let mut diff = ScheduleDiff::default();
    for (place, (policy_id, given)) in wanted.into_iter().enumerate() {
        // A millisecond apart, so a host lists them in the policy's order.
        let created_at = now + chrono::Duration::milliseconds(place as i64);
        match by_origin.remove(&(policy_id, given.id)) {
            Some(row) if same_schedule(row, given) => {}
            Some(row) => diff.upsert.push(ScheduleRecord {
                kind: given.kind.clone(),
                cron: given.cron.clone(),
                timezone: given.timezone.clone(),
                params: given.params.clone(),
                enabled: given.enabled,
                jitter_seconds: given.jitter_seconds,
                updated_at: now,
                ..row.clone()
            }),
            None => diff.upsert.push(ScheduleRecord {
                id: ScheduleId::new(),
                host_id: host,
                kind: given.kind.clone(),
                cron: given.cron.clone(),
                timezone: given.timezone.clone(),
                params: given.params.clone(),
                enabled: given.enabled,
                jitter_seconds: given.jitter_seconds,
                created_at,
                updated_at: now,
                policy: Some((policy_id, given.id)),
            }),
        }
    }
    // Rows of other policies, of removed policy schedules, or now shadowed
    // by the host's own: exactly what the policy gave, and nothing else.
    let mut stale: Vec<&ScheduleRecord> = by_origin.into_values().collect();
    stale.sort_by_key(|row| row.id);
    diff.delete = stale.into_iter().map(|row| row.id).collect();
    // Rows without an origin are not policy rows; never touched here.
    diff
}

fn same_schedule(row: &ScheduleRecord, given: &PolicyScheduleRecord) -> bool {
    row.kind == given.kind
        && row.cron == given.cron
        && row.timezone == given.timezone
        && row.params == given.params
        && row.enabled == given.enabled
        && row.jitter_seconds == given.jitter_seconds
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use rm_core::Selector;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::parse(
            "labels",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap()
    }

    fn policy(name: &str, selector: &[(&str, &str)], priority: i32, age: i64) -> PolicyRecord {
        let at = Utc.timestamp_opt(1_700_000_000 + age, 0).unwrap();
        PolicyRecord {
            id: PolicyId::new(),
            name: name.to_owned(),
            selector: Selector(labels(selector)),
            priority,
            repository: None,
            schedules: vec![PolicyScheduleRecord {
                id: ScheduleId::new(),
                kind: String::from("backup"),
                cron: String::from("0 2 * * *"),
                timezone: None,
                params: serde_json::json!({"paths": ["/etc"]}),
                enabled: true,
                jitter_seconds: 0,
            }],
            freshness_seconds: None,
            offline_seconds: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_highest_priority_wins_and_ties_go_to_the_oldest() {
        let everyone = policy("everyone", &[], 0, 0);
        let prod = policy("prod", &[("env", "prod")], 10, 5);
        let prod_db = policy("prod-db", &[("env", "prod"), ("role", "db")], 10, 1);
        let staging = policy("staging", &[("env", "staging")], 100, 0);
        let all = vec![everyone, prod, prod_db, staging];
        let db = labels(&[("env", "prod"), ("role", "db")]);
        let names = |l: &Labels| -> Vec<String> {
            ranked(&all, l).iter().map(|p| p.name.clone()).collect()
        };
        // prod-db and prod tie on 10: prod-db is older.
        assert_eq!(names(&db), ["prod-db", "prod", "everyone"]);
        assert_eq!(names(&labels(&[("env", "prod")])), ["prod", "everyone"]);
        assert_eq!(names(&Labels::default()), ["everyone"]);
        assert_eq!(
            winner(&all, &labels(&[("env", "staging")])).unwrap().name,
            "staging"
        );
        assert!(winner(&[], &db).is_none());
    }

    #[test]
    fn templates_know_two_placeholders() {
        assert!(check_template("/srv/restic/{host}").is_ok());
        assert!(check_template("rest:http://r:8000/{host_id}/{host}").is_ok());
        assert!(check_template("s3:s3.amazonaws.com/bucket/fleet").is_ok());
        let err = check_template("/srv/{hostname}").unwrap_err().to_string();
        assert!(err.contains("`{hostname}`"), "{err}");
        assert!(check_template("/srv/{host").is_err());
        assert!(check_template("/srv/host}").is_err());
    }

    #[test]
    fn expansion_keeps_names_inside_their_folder() {
        let id: HostId = "01J0000000000000000000000A".parse().unwrap();
        assert_eq!(expand("/srv/{host}", "web1", id), "/srv/web1");
        assert_eq!(
            expand("/srv/{host_id}", "web1", id),
            "/srv/01J0000000000000000000000A"
        );
        assert_eq!(expand("/srv/{host}", "../../etc", id), "/srv/_.-..-etc");
        assert_eq!(expand("{host}", "-r", id), "_r");
        assert_eq!(expand("/srv/{host}", "a b@c:d", id), "/srv/a-b-c-d");
        assert!(is_per_host("/srv/{host}"));
        assert!(!is_per_host("/srv/shared"));
    }

    #[test]
    fn repository_identity_ignores_passwords_and_trailing_slashes() {
        assert_eq!(
            repository_key("rest:http://u:secret@r:8000/fleet/"),
            "rest:http://u:***@r:8000/fleet"
        );
        assert_eq!(repository_key("/srv/r"), repository_key("/srv/r/"));
        assert_eq!(repository_key("/"), "/");
    }

    #[test]
    fn freshness_comes_from_the_host_then_the_policy_then_the_default() {
        let mut p = policy("p", &[], 0, 0);
        assert_eq!(
            freshness(None, None),
            (DEFAULT_FRESHNESS_SECONDS, "default")
        );
        assert_eq!(
            freshness(None, Some(&p)),
            (DEFAULT_FRESHNESS_SECONDS, "default")
        );
        p.freshness_seconds = Some(3600);
        assert_eq!(freshness(None, Some(&p)), (3600, "policy"));
        assert_eq!(freshness(Some(60), Some(&p)), (60, "host"));
        assert_eq!(offline_after(None, Some(&p)), (3600, "default"));
        p.offline_seconds = Some(600);
        assert_eq!(offline_after(None, Some(&p)), (600, "policy"));
        assert_eq!(offline_after(Some(120), Some(&p)), (120, "host"));
    }

    #[test]
    fn a_policy_gives_its_schedules_once_and_edits_keep_the_row() {
        let host = HostId::new();
        let now = Utc::now();
        let mut p = policy("p", &[], 0, 0);
        let first = schedule_diff(host, Some(&p), &[], &[], now);
        assert_eq!(first.upsert.len(), 1);
        assert!(first.delete.is_empty());
        let rows = first.upsert.clone();
        // The same policy again: nothing to do.
        assert_eq!(
            schedule_diff(host, Some(&p), &[], &rows, now),
            ScheduleDiff::default()
        );
        // An edited cron replaces the row under its id.
        p.schedules[0].cron = String::from("0 3 * * *");
        let edited = schedule_diff(host, Some(&p), &[], &rows, now);
        assert_eq!(edited.upsert.len(), 1);
        assert_eq!(edited.upsert[0].id, rows[0].id);
        assert_eq!(edited.upsert[0].cron, "0 3 * * *");
        // The host's own backup schedule wins: the policy's is removed.
        let own = schedule_diff(host, Some(&p), &[String::from("backup")], &rows, now);
        assert!(own.upsert.is_empty());
        assert_eq!(own.delete, vec![rows[0].id]);
        // No policy any more: exactly its rows go.
        let gone = schedule_diff(host, None, &[], &rows, now);
        assert_eq!(gone.delete, vec![rows[0].id]);
        // Another policy: the old one's rows go, the new one's come.
        let other = policy("other", &[], 5, 1);
        let switched = schedule_diff(host, Some(&other), &[], &rows, now);
        assert_eq!(switched.delete, vec![rows[0].id]);
        assert_eq!(
            switched.upsert[0].policy,
            Some((other.id, other.schedules[0].id))
        );
    }
}
