//! Property tests of job parameters: any JSON for any kind is either
//! accepted or refused with an error naming a `params` field, never a
//! panic; every accepted backup path, restore include and restore target is
//! absolute and normalised (no `.`/`..`/empty components, nothing that reads
//! as a flag); a `..` segment is refused naming the exact field.
//!
//! `PROPTEST_CASES` raises the case count (CI keeps the modest default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::test_runner::Config;
use rm_protocol::params::{absolute_path, JobParams};
use rm_protocol::JobKind;
use serde_json::{json, Map, Value};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = None;
    config
}

/// The rule, written independently of the validator: what an accepted
/// path must look like.
fn is_normalised_absolute(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !path.starts_with('-')
        && !path.contains("//")
        && !path.chars().any(char::is_control)
        && (rest.is_empty() || rest.split('/').all(|c| !matches!(c, "" | "." | "..")))
}

/// Path pieces that make the interesting cases likely.
const SEGMENTS: &[&str] = &[
    "", ".", "..", "...", "a", "srv", "b c", "-x", "--help", ".hidden", "..x", "x..", "é", "\u{0}",
    "\n", "\\", "~",
];

/// Strings shaped like paths: optional leading `/` or `-`, segments from
/// [`SEGMENTS`] or random text, optional trailing `/`.
fn path_like() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => proptest::sample::select(SEGMENTS).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    (
        proptest::sample::select(vec!["/", "", "-", "//", "./"]),
        proptest::collection::vec(segment, 0..6),
        any::<bool>(),
    )
        .prop_map(|(lead, segments, trailing)| {
            let mut path = format!("{lead}{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            path
        })
}

/// A normalised absolute path.
fn good_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9 ._-]{1,12}", 0..5).prop_filter_map(
        "no dot components",
        |segments| {
            let path = format!("/{}", segments.join("/"));
            is_normalised_absolute(&path).then_some(path)
        },
    )
}

/// A path with a `..` component somewhere.
fn traversal() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec("[a-z]{1,8}", 0..4),
        proptest::collection::vec("[a-z]{1,8}", 0..4),
    )
        .prop_map(|(before, after)| {
            let mut parts = before;
            parts.push("..".to_owned());
            parts.extend(after);
            format!("/{}", parts.join("/"))
        })
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        path_like().prop_map(Value::String),
    ]
}

/// Random params objects, with the real field names mixed in.
fn params_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => proptest::sample::select(vec![
            "paths", "excludes", "tags", "preset", "keep_last", "keep_daily", "keep_within",
            "prune", "read_data_subset", "snapshot_id", "source_host_id", "include", "target",
            "iexcludes", "exclude_caches", "exclude_if_present", "exclude_larger_than",
            "one_file_system", "skip_if_unchanged", "limit_upload_kib", "limit_download_kib",
            "read_data", "cycle", "subset",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,10}",
    ];
    let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    prop_oneof![
        1 => json_leaf(),
        4 => proptest::collection::btree_map(key, value, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
    ]
}

fn kind() -> impl Strategy<Value = JobKind> {
    proptest::sample::select(JobKind::ALL.to_vec())
}

/// Every path an accepted job will hand to restic.
fn paths_of(params: &JobParams) -> Vec<String> {
    match params {
        JobParams::Backup(p) => p.paths.clone(),
        JobParams::Restore(p) => {
            let mut all = p.include.clone();
            all.push(p.target.clone());
            all
        }
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_json_is_accepted_or_refused_naming_a_params_field(kind in kind(), params in params_value()) {
        match JobParams::parse(kind, &params) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.kind(), kind);
                for path in paths_of(&parsed) {
                    prop_assert!(is_normalised_absolute(&path), "accepted {:?}", path);
                }
                // The stored form parses back to the same params.
                prop_assert_eq!(JobParams::parse(kind, &parsed.to_value()).unwrap(), parsed);
            }
            Err(e) => {
                prop_assert!(e.field == "params" || e.field.starts_with("params."), "{:?}", e);
                prop_assert!(!e.problem.is_empty());
                let shown = e.to_string();
                prop_assert!(shown.starts_with(&format!("`{}` ", e.field)), "{}", shown);
            }
        }
    }

    #[test]
    fn the_path_validator_matches_the_rule(path in path_like()) {
        let verdict = absolute_path(&path);
        prop_assert_eq!(
            verdict.is_ok(),
            is_normalised_absolute(&path) && path.chars().count() <= 4096,
            "{:?} -> {:?}", path, verdict
        );
    }

    #[test]
    fn backup_paths_are_checked_one_by_one(
        good in proptest::collection::vec(good_path(), 0..4),
        bad in path_like(),
        at in any::<proptest::sample::Index>(),
    ) {
        let mut paths = good;
        let i = at.index(paths.len() + 1);
        paths.insert(i, bad.clone());
        let result = JobParams::parse(JobKind::Backup, &json!({"paths": paths}));
        if is_normalised_absolute(&bad) {
            prop_assert!(result.is_ok(), "{:?}", result);
        } else {
            let e = result.unwrap_err();
            prop_assert_eq!(e.field, format!("params.paths[{i}]"));
        }
    }

    #[test]
    fn traversal_is_refused_wherever_it_appears(
        bad in traversal(),
        good in good_path(),
        place in 0..3u8,
    ) {
        let (params, field) = match place {
            0 => (json!({"paths": [good, bad]}), "params.paths[1]"),
            1 => (
                json!({"snapshot_id": "1a2b3c4d", "include": [good, bad], "target": "/tmp/r"}),
                "params.include[1]",
            ),
            _ => (json!({"snapshot_id": "1a2b3c4d", "target": bad}), "params.target"),
        };
        let kind = if place == 0 { JobKind::Backup } else { JobKind::Restore };
        let e = JobParams::parse(kind, &params).unwrap_err();
        prop_assert_eq!(&e.field, field);
        prop_assert!(e.problem.contains("`..`"), "{}", e);
    }

    #[test]
    fn restore_targets_that_pass_are_normalised(target in path_like(), include in proptest::collection::vec(path_like(), 0..3)) {
        let params = json!({"snapshot_id": "0123abcd", "include": include, "target": target});
        if let Ok(parsed) = JobParams::parse(JobKind::Restore, &params) {
            for path in paths_of(&parsed) {
                prop_assert!(is_normalised_absolute(&path), "accepted {:?}", path);
            }
        }
    }
}

/// Found while writing `the_path_validator_matches_the_rule`: `//` inside a
/// path used to pass, so `/srv//data` reached restic un-normalised.
#[test]
fn empty_components_are_refused() {
    for bad in ["//", "/srv//data", "//srv", "/srv//", "///"] {
        let e = absolute_path(bad).unwrap_err();
        assert!(e.contains("`//`"), "{bad}: {e}");
    }
    for good in ["/", "/srv", "/srv/", "/srv/data", "/.hidden/..x/x.."] {
        assert!(absolute_path(good).is_ok(), "{good}");
    }
}
