//! Property tests of the frame decoder: whatever arrives on the socket —
//! random bytes, random text, random JSON, huge numbers, deep nesting —
//! decoding never panics and fails with a typed error that says what was
//! wrong; every message that encodes decodes back to itself; and a payload
//! whose field has the wrong JSON type is refused naming that field.
//!
//! `PROPTEST_CASES` raises the case count (CI keeps the modest default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;
use rm_protocol::*;
use serde_json::{json, Map, Value};

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to
/// shake out shape bugs, cheap enough for every `cargo test`.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = None;
    // Some properties skip the few frames with nothing to check; a large
    // `PROPTEST_CASES` must not turn those skips into a failure.
    config.max_global_rejects = config.max_global_rejects.max(config.cases / 4);
    config
}

// ---- strategies ------------------------------------------------------------

/// Field names of the protocol, so random objects often hit real fields.
const FIELD_NAMES: &[&str] = &[
    "type",
    "id",
    "payload",
    "protocol_version",
    "version",
    "job_id",
    "kind",
    "params",
    "lines",
    "seq",
    "ts",
    "stream",
    "text",
    "status",
    "stats",
    "finished_at",
    "schedules",
    "entries",
    "code",
    "message",
    "percent",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_./ -]{0,24}",
        // Anything Unicode, control characters and NUL included.
        1 => any::<String>(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        text().prop_map(Value::String),
    ]
}

/// Arbitrary JSON, nested a few levels, with protocol field names mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Any instant chrono can represent, with nanoseconds.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        // Realistic: 1970 to 2200.
        3 => (0i64..7_258_118_400, 0u32..1_000_000_000),
        1 => (min..=max, 0u32..1_000_000_000),
    ]
    .prop_filter_map("representable", |(secs, nanos)| {
        DateTime::from_timestamp(secs, nanos)
    })
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn job_kind() -> impl Strategy<Value = JobKind> {
    proptest::sample::select(JobKind::ALL.to_vec())
}

fn repository() -> impl Strategy<Value = RepositoryConfig> {
    (
        text(),
        text(),
        proptest::collection::btree_map("[A-Z_]{1,12}", text(), 0..3),
    )
        .prop_map(|(url, password, env)| RepositoryConfig {
            url,
            password,
            env,
            copy_to: None,
        })
}

fn hello() -> impl Strategy<Value = Message> {
    (
        any::<u32>(),
        text(),
        opt(text()),
        opt(text()),
        (text(), text(), text()),
        (
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(text(), 0..3),
        ),
    )
        .prop_map(
            |(
                protocol_version,
                agent_version,
                restic_version,
                restic_error,
                (hostname, os, arch),
                (running_jobs, spooled_jobs),
            )| {
                Hello {
                    protocol_version,
                    agent_version,
                    restic_version,
                    restic_error,
                    hostname,
                    os,
                    arch,
                    running_jobs,
                    spooled_jobs,
                    hooks: Vec::new(),
                    hooks_refused: Vec::new(),
                    platform: None,
                }
                .into()
            },
        )
}

fn config_update() -> impl Strategy<Value = Message> {
    (opt(repository()), any::<u32>()).prop_map(|(repository, heartbeat_seconds)| {
        ConfigUpdate {
            repository,
            settings: AgentSettings { heartbeat_seconds },
        }
        .into()
    })
}

fn schedule_set() -> impl Strategy<Value = Message> {
    let schedule = (
        text(),
        job_kind(),
        text(),
        opt(text()),
        json_value(),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(
            |(id, kind, cron, timezone, params, enabled, jitter_seconds)| Schedule {
                id,
                kind,
                cron,
                timezone,
                params,
                enabled,
                jitter_seconds,
            },
        );
    (any::<u64>(), proptest::collection::vec(schedule, 0..3))
        .prop_map(|(version, schedules)| ScheduleSet { version, schedules }.into())
}

fn schedule_ack_and_fire() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), instant()).prop_map(|(version, applied_at)| ScheduleAck {
            version,
            applied_at
        }
        .into()),
        (text(), instant(), opt(text()), any::<bool>(), any::<bool>()).prop_map(
            |(schedule_id, scheduled_at, job_id, skipped, catch_up)| ScheduleFire {
                schedule_id,
                scheduled_at,
                job_id,
                skipped,
                catch_up,
            }
            .into()
        ),
    ]
}

fn commands() -> impl Strategy<Value = Message> {
    let reason = proptest::sample::select(vec![
        RejectReason::Busy,
        RejectReason::UnknownKind,
        RejectReason::NoCredentials,
        RejectReason::BadParams,
        RejectReason::Other,
    ]);
    prop_oneof![
        (text(), job_kind(), json_value(), opt(repository())).prop_map(
            |(job_id, kind, params, repository)| CommandRun {
                job_id,
                kind,
                params,
                repository,
            }
            .into()
        ),
        (text(), any::<bool>(), opt(reason), opt(text())).prop_map(
            |(job_id, accepted, reason, message)| CommandResult {
                job_id,
                accepted,
                reason,
                message,
            }
            .into()
        ),
        text().prop_map(|job_id| CommandCancel { job_id }.into()),
        (text(), instant())
            .prop_map(|(job_id, started_at)| JobStarted { job_id, started_at }.into()),
    ]
}

fn job_reports() -> impl Strategy<Value = Message> {
    let outcome = proptest::sample::select(vec![
        JobOutcome::Succeeded,
        JobOutcome::Partial,
        JobOutcome::Failed,
        JobOutcome::Cancelled,
    ]);
    let line = (
        any::<u64>(),
        instant(),
        any::<bool>(),
        prop_oneof![3 => text(), 1 => "\\PC{0,2000}"],
    )
        .prop_map(|(seq, ts, stderr, text)| LogLine {
            seq,
            ts,
            stream: if stderr {
                LogStreamKind::Stderr
            } else {
                LogStreamKind::Stdout
            },
            text,
        });
    let progress = (
        text(),
        -1e300f64..1e300,
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        opt(any::<u64>()),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(
                job_id,
                percent,
                (files_done, files_total, bytes_done, bytes_total),
                eta_seconds,
                current_files,
            )| {
                JobProgress {
                    job_id,
                    percent,
                    files_done,
                    files_total,
                    bytes_done,
                    bytes_total,
                    eta_seconds,
                    current_files,
                }
                .into()
            },
        );
    prop_oneof![
        (text(), proptest::collection::vec(line, 0..4)).prop_map(|(job_id, lines)| LogStream {
            job_id,
            lines
        }
        .into()),
        (
            text(),
            outcome,
            opt(any::<i32>()),
            json_value(),
            opt(text()),
            instant()
        )
            .prop_map(|(job_id, status, exit_code, stats, error, finished_at)| {
                JobFinished {
                    job_id,
                    status,
                    exit_code,
                    stats,
                    error,
                    finished_at,
                }
                .into()
            }),
        progress,
        (text(), any::<u64>(), any::<bool>(), opt(text())).prop_map(
            |(job_id, log_seq, done, error)| JobAck {
                job_id,
                log_seq,
                done,
                error,
            }
            .into()
        ),
    ]
}

fn repository_reports() -> impl Strategy<Value = Message> {
    let snapshot = (
        (text(), text(), instant(), text()),
        proptest::collection::vec(text(), 0..3),
        proptest::collection::vec(text(), 0..3),
        opt(any::<u64>()),
        opt(any::<u64>()),
    )
        .prop_map(
            |((id, short_id, time, hostname), paths, tags, size_bytes, file_count)| SnapshotInfo {
                id,
                short_id,
                time,
                hostname,
                paths,
                tags,
                size_bytes,
                file_count,
            },
        )
        .boxed();
    let stats = (
        (
            opt(any::<u64>()),
            opt(any::<u64>()),
            opt(any::<u64>()),
            opt(any::<u64>()),
        ),
        (opt(instant()), opt(text()), opt(any::<bool>())),
        (opt(instant()), opt(any::<u64>())),
    )
        .prop_map(
            |(
                (total_size_bytes, raw_size_bytes, unique_files, snapshot_count),
                (last_check_at, last_check_status, lock_present),
                (last_prune_at, last_prune_freed_bytes),
            )| RepoStats {
                total_size_bytes,
                raw_size_bytes,
                unique_files,
                snapshot_count,
                last_check_at,
                last_check_status,
                lock_present,
                last_prune_at,
                last_prune_freed_bytes,
            },
        );
    prop_oneof![
        (text(), snapshot.clone()).prop_map(|(job_id, snapshot)| SnapshotAdded {
            job_id,
            snapshot
        }
        .into()),
        proptest::collection::vec(snapshot, 0..3)
            .prop_map(|snapshots| SnapshotsReport { snapshots }.into()),
        stats.prop_map(Message::from),
    ]
}

fn tree_and_errors() -> impl Strategy<Value = Message> {
    let entry_type = proptest::sample::select(vec![
        EntryType::File,
        EntryType::Dir,
        EntryType::Symlink,
        EntryType::Other,
    ]);
    let entry = (
        text(),
        entry_type,
        text(),
        opt(any::<u64>()),
        opt(instant()),
        opt(any::<u32>()),
    )
        .prop_map(|(name, entry_type, path, size, mtime, mode)| TreeEntry {
            name,
            entry_type,
            path,
            size,
            mtime,
            mode,
        });
    let code = proptest::sample::select(vec![
        ErrorCode::BadRequest,
        ErrorCode::ProtocolTooOld,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Unknown,
    ]);
    prop_oneof![
        (text(), text()).prop_map(|(snapshot_id, path)| TreeList { snapshot_id, path }.into()),
        (proptest::collection::vec(entry, 0..4), opt(text()))
            .prop_map(|(entries, error)| TreeListResult { entries, error }.into()),
        (code, text(), opt(text())).prop_map(|(code, message, url)| ErrorBody {
            code,
            message,
            url
        }
        .into()),
        Just(Heartbeat {}.into()),
    ]
}

/// A message of any kind this build knows, with arbitrary field values.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello(),
        config_update(),
        schedule_set(),
        schedule_ack_and_fire(),
        commands(),
        job_reports(),
        repository_reports(),
        tree_and_errors(),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (opt(text()), message()).prop_map(|(id, message)| Frame { id, message })
}

// ---- helpers -----------------------------------------------------------------

/// Decodes `text`, checking that a failure is typed and explains itself.
fn decode_checked(text: &str) -> Option<Frame> {
    match Frame::decode(text) {
        Ok(frame) => Some(frame),
        Err(e) => {
            let shown = e.to_string();
            match &e {
                DecodeError::Envelope(_) => {
                    assert!(e.kind().is_none());
                    assert!(
                        shown.starts_with("frame is not a valid envelope: ")
                            && shown.len() > "frame is not a valid envelope: ".len(),
                        "{shown}"
                    );
                }
                DecodeError::Payload { kind, .. } => {
                    assert!(Message::KINDS.contains(kind), "{kind}");
                    assert!(
                        shown.starts_with(&format!("malformed payload for `{kind}`: ")),
                        "{shown}"
                    );
                }
            }
            None
        }
    }
}

/// Keys whose value is free-form JSON: any type is right there.
const FREE_FORM: &[&str] = &["params", "stats"];

/// Every (path, value) below `value` that a wrong type must be refused
/// for, in serde_path_to_error's spelling (`lines[0].seq`).
fn typed_fields(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if FREE_FORM.contains(&k.as_str()) || v.is_null() {
                    continue;
                }
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push((here.clone(), v.clone()));
                typed_fields(v, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                typed_fields(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A non-null value of a JSON type other than `original`'s. An array never
/// replaces an object: serde may read a struct from a sequence.
fn wrong_type_for(original: &Value, pick: usize) -> Value {
    let candidates: Vec<Value> = [
        json!("not the right type"),
        json!(true),
        json!(12.5),
        json!([1, 2]),
        json!({"unexpected": "object"}),
    ]
    .into_iter()
    .filter(|c| std::mem::discriminant(c) != std::mem::discriminant(original))
    .filter(|c| !(original.is_object() && c.is_array()))
    // A float is still a number; a u64 field given 12.5 is wrong, but a
    // number for an f64 is right, so numbers only replace non-numbers.
    .filter(|c| !(original.is_number() && c.is_number()))
    .collect();
    candidates[pick % candidates.len()].clone()
}

fn set_path(root: &mut Value, path: &str, new: Value) {
    let mut target = root;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        target = &mut target[name];
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            target = &mut target[index.parse::<usize>().unwrap()];
        }
    }
    *target = new;
}

// ---- properties ----------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_checked(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        decode_checked(&text);
    }

    #[test]
    fn huge_and_odd_numbers_never_panic(
        kind in proptest::sample::select(Message::KINDS),
        field in proptest::sample::select(FIELD_NAMES),
        number in prop_oneof![
            "-?[0-9]{1,400}",
            "-?[0-9]{1,30}\\.[0-9]{1,30}",
            "-?[0-9]{1,3}(\\.[0-9]{1,5})?[eE][+-]?[0-9]{1,6}",
        ],
    ) {
        let text = format!(r#"{{"type":"{kind}","payload":{{"{field}":{number},"lines":[{{"seq":{number}}}]}}}}"#);
        decode_checked(&text);
    }
}

/// Runs `test` on a thread with a large stack. Generating nested JSON
/// through proptest's boxed unions takes tens of KiB of stack per level in a
/// debug build, and the 2 MiB of a test thread overflowed in about one run
/// in a hundred (always while generating, never in `Frame::decode`, whose
/// depth serde_json bounds: see `deep_nesting_is_an_error_not_a_stack_overflow`).
fn on_a_deep_stack(test: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(test)
        .expect("spawn the test's thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn random_json_envelopes_never_panic() {
    on_a_deep_stack(|| {
        proptest!(config(256), |(value in json_value())| {
            decode_checked(&value.to_string());
        });
    });
}

#[test]
fn random_payloads_of_known_kinds_fail_naming_the_kind() {
    on_a_deep_stack(|| {
        proptest!(config(256), |(kind in proptest::sample::select(Message::KINDS), payload in json_value(), id in opt(text()),)| {
            let text = json!({"type": kind, "id": id, "payload": payload}).to_string();
            if let Some(frame) = decode_checked(&text) {
                prop_assert_eq!(frame.message.kind(), kind);
            }
            if let Err(e) = Frame::decode(&text) {
                prop_assert_eq!(e.kind(), Some(kind));
            }
        });
    });
}

#[test]
fn truncated_frames_never_panic() {
    on_a_deep_stack(|| {
        proptest!(config(256), |(frame in frame(), cut in any::<proptest::sample::Index>())| {
            let text = frame.encode();
            let end = cut.index(text.len() + 1);
            if let Some(prefix) = text.get(..end) {
                decode_checked(prefix);
            }
        });
    });
}

#[test]
fn every_message_round_trips() {
    on_a_deep_stack(|| {
        proptest!(config(256), |(frame in frame())| {
            let text = frame.encode();
            let decoded = Frame::decode(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(decoded, frame);
        });
    });
}

#[test]
fn a_wrongly_typed_field_is_named() {
    on_a_deep_stack(|| {
        proptest!(config(256), |(frame in frame(), which in any::<usize>(), pick in any::<usize>())| {
            let payload = frame.message.payload();
            let mut fields = Vec::new();
            typed_fields(&payload, "", &mut fields);
            prop_assume!(!fields.is_empty());
            let (path, original) = &fields[which % fields.len()];
            let mut broken = payload.clone();
            set_path(&mut broken, path, wrong_type_for(original, pick));
            let text = json!({"type": frame.message.kind(), "payload": broken}).to_string();
            let error = match Frame::decode(&text) {
                Ok(decoded) => {
                    return Err(TestCaseError::fail(format!(
                        "`{path}` of the wrong type was accepted: {text} -> {decoded:?}"
                    )))
                }
                Err(e) => e,
            };
            prop_assert_eq!(error.kind(), Some(frame.message.kind()));
            // The path may go deeper than the field (an enum given an object
            // names the object's key), but it starts at the field.
            let shown = error.to_string();
            let named = [format!("at `{path}`"), format!("at `{path}."), format!("at `{path}[")];
            prop_assert!(named.iter().any(|n| shown.contains(n)), "{} does not name `{}`", shown, path);
        });
    });
}

// ---- fixed cases ----------------------------------------------------------------

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let text = format!(r#"{{"type":"job.finished","payload":{{"stats":{nested}}}}}"#);
        let e = Frame::decode(&text).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
}

#[test]
fn numbers_beyond_the_field_type_name_the_field() {
    let e = Frame::decode(r#"{"type":"schedule.set","payload":{"version":18446744073709551616}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("at `version`"), "{e}");
    let e = Frame::decode(r#"{"type":"log.stream","payload":{"job_id":"j","lines":[{"seq":-1,"ts":"2025-01-01T00:00:00Z","stream":"stdout","text":""}]}}"#)
        .unwrap_err();
    assert!(e.to_string().contains("at `lines[0].seq`"), "{e}");
    assert!(Frame::decode(r#"{"type":"hello","payload":{"protocol_version":1e400}}"#).is_err());
}

#[test]
fn the_free_form_fields_take_any_json() {
    let frame = Frame::new(JobFinished {
        job_id: "j".into(),
        status: JobOutcome::Succeeded,
        exit_code: None,
        stats: json!([1, "two", {"3": null}]),
        error: None,
        finished_at: DateTime::<Utc>::MIN_UTC,
    });
    assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
}

/// Found by `every_message_round_trips`: serde_json's default float parser
/// may be off by one unit in the last place, so a progress sample or a
/// stats figure changed on its way through the wire. The workspace now
/// enables serde_json's `float_roundtrip`.
#[test]
fn floats_cross_the_wire_exactly() {
    for percent in [
        5.014_462_291_218_835_4e299,
        0.1 + 0.2,
        33.333_333_333_333_336,
    ] {
        let frame = Frame::new(JobProgress {
            job_id: "j".into(),
            percent,
            ..JobProgress::default()
        });
        assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    }
}
