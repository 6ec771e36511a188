//! The wire format of every message kind: what `encode` writes, what
//! `decode` accepts and rejects, and how a newer peer's frames are tolerated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rm_protocol::api::{EnrollRequest, EnrollResponse, LoginRequest};
use rm_protocol::*;
use serde_json::{json, Value};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const JOB: &str = "01J0BC4D5E6F7G8H9J0K1M2N3P";
const SCHEDULE: &str = "01J0B9Z3K4M5N6P7Q8R9S0T1V2";
const REQUEST: &str = "01J0BD7Q8R9S0T1V2W3X4Y5Z6A";

fn hello() -> Hello {
    Hello {
        protocol_version: 1,
        agent_version: "0.1.0".into(),
        restic_version: Some("0.16.4".into()),
        restic_error: None,
        hostname: "web-01".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        running_jobs: Vec::new(),
        spooled_jobs: Vec::new(),
        hooks: Vec::new(),
        hooks_refused: Vec::new(),
        platform: None,
    }
}

/// One frame of every kind, with the payload fields its JSON must have.
fn one_of_each() -> Vec<(Frame, &'static [&'static str])> {
    vec![
        (
            Frame::new(hello()),
            &[
                "protocol_version",
                "agent_version",
                "restic_version",
                "hostname",
                "os",
                "arch",
            ],
        ),
        (Frame::new(Heartbeat {}), &[]),
        (
            Frame::new(ConfigUpdate {
                repository: Some(RepositoryConfig {
                    url: "rest:http://backup.lan:8000/web-01".into(),
                    password: "pw".into(),
                    env: BTreeMap::from([("RESTIC_REST_USERNAME".into(), "web".into())]),
                    copy_to: None,
                }),
                settings: AgentSettings {
                    heartbeat_seconds: 15,
                },
            }),
            &["repository", "settings"],
        ),
        (
            Frame::new(ScheduleSet {
                version: 7,
                schedules: vec![Schedule {
                    id: SCHEDULE.into(),
                    kind: JobKind::Backup,
                    cron: "0 2 * * *".into(),
                    timezone: Some("Europe/Berlin".into()),
                    params: json!({"paths": ["/etc"]}),
                    enabled: true,
                    jitter_seconds: 600,
                }],
            }),
            &["version", "schedules"],
        ),
        (
            Frame::new(ScheduleAck {
                version: 7,
                applied_at: at("2025-06-01T09:15:02Z"),
            }),
            &["version", "applied_at"],
        ),
        (
            Frame::new(ScheduleFire {
                schedule_id: SCHEDULE.into(),
                scheduled_at: at("2025-06-02T00:00:00Z"),
                job_id: Some(JOB.into()),
                skipped: false,
                catch_up: true,
            }),
            &["schedule_id", "scheduled_at", "job_id", "catch_up"],
        ),
        (
            Frame::new(CommandRun {
                job_id: JOB.into(),
                kind: JobKind::Forget,
                params: json!({"keep_daily": 7, "prune": true}),
                repository: None,
            }),
            &["job_id", "kind", "params"],
        ),
        (
            Frame::new(CommandResult {
                job_id: JOB.into(),
                accepted: false,
                reason: Some(RejectReason::NoCredentials),
                message: Some("no repository is set for this host".into()),
            }),
            &["job_id", "accepted", "reason", "message"],
        ),
        (
            Frame::new(CommandCancel { job_id: JOB.into() }),
            &["job_id"],
        ),
        (
            Frame::new(JobStarted {
                job_id: JOB.into(),
                started_at: at("2025-06-01T09:20:00Z"),
            }),
            &["job_id", "started_at"],
        ),
        (
            Frame::new(JobProgress {
                job_id: JOB.into(),
                percent: 42.5,
                files_done: 10,
                files_total: 20,
                bytes_done: 1000,
                bytes_total: 2000,
                eta_seconds: Some(95),
                current_files: vec!["/etc/hosts".into()],
            }),
            &[
                "job_id",
                "percent",
                "files_done",
                "files_total",
                "bytes_done",
                "bytes_total",
                "eta_seconds",
                "current_files",
            ],
        ),
        (
            Frame::new(LogStream {
                job_id: JOB.into(),
                lines: vec![LogLine {
                    seq: 1,
                    ts: at("2025-06-01T09:20:00.125Z"),
                    stream: LogStreamKind::Stderr,
                    text: "warning".into(),
                }],
            }),
            &["job_id", "lines"],
        ),
        (
            Frame::new(JobFinished {
                job_id: JOB.into(),
                status: JobOutcome::Partial,
                exit_code: Some(3),
                stats: json!({"files_new": 12}),
                error: Some("incomplete snapshot".into()),
                finished_at: at("2025-06-01T09:21:36Z"),
            }),
            &[
                "job_id",
                "status",
                "exit_code",
                "stats",
                "error",
                "finished_at",
            ],
        ),
        (
            Frame::new(JobAck {
                job_id: JOB.into(),
                log_seq: 1200,
                done: true,
                error: Some("job not found for this host".into()),
            }),
            &["job_id", "log_seq", "done", "error"],
        ),
        (
            Frame::new(SnapshotsReport {
                snapshots: vec![SnapshotInfo {
                    id: "4d3f2a1b".repeat(8),
                    short_id: "4d3f2a1b".into(),
                    time: at("2025-06-01T09:20:00Z"),
                    hostname: "web-01".into(),
                    paths: vec!["/etc".into()],
                    tags: vec!["nightly".into()],
                    size_bytes: Some(4096),
                    file_count: Some(3),
                }],
            }),
            &["snapshots"],
        ),
        (
            Frame::new(SnapshotAdded {
                job_id: JOB.into(),
                snapshot: SnapshotInfo {
                    id: "4d3f2a1b".repeat(8),
                    short_id: "4d3f2a1b".into(),
                    time: at("2025-06-01T09:20:00Z"),
                    hostname: "web-01".into(),
                    paths: vec!["/etc".into()],
                    tags: Vec::new(),
                    size_bytes: None,
                    file_count: None,
                },
            }),
            &["job_id", "snapshot"],
        ),
        (
            Frame::new(RepoStats {
                total_size_bytes: Some(1 << 40),
                raw_size_bytes: Some(1 << 30),
                unique_files: Some(184_220),
                snapshot_count: Some(42),
                last_check_at: Some(at("2025-05-31T03:00:00Z")),
                last_check_status: Some("succeeded".into()),
                lock_present: Some(false),
                last_prune_at: Some(at("2025-05-25T04:00:00Z")),
                last_prune_freed_bytes: Some(734_003_200),
            }),
            &[
                "total_size_bytes",
                "raw_size_bytes",
                "unique_files",
                "snapshot_count",
                "last_check_at",
                "last_check_status",
                "lock_present",
                "last_prune_at",
                "last_prune_freed_bytes",
            ],
        ),
        (
            Frame::with_id(
                REQUEST,
                TreeList {
                    snapshot_id: "4d3f2a1b".into(),
                    path: "/home".into(),
                },
            ),
            &["snapshot_id", "path"],
        ),
        (
            Frame::with_id(
                REQUEST,
                TreeListResult {
                    entries: vec![TreeEntry {
                        name: "alice".into(),
                        entry_type: EntryType::Dir,
                        path: "/home/alice".into(),
                        size: None,
                        mtime: Some(at("2025-05-30T18:02:11Z")),
                        mode: Some(0o755),
                    }],
                    error: None,
                },
            ),
            &["entries", "error"],
        ),
        (
            Frame::new(ErrorBody::new(ErrorCode::Busy, "try later")),
            &["code", "message"],
        ),
        (
            Frame::new(TokenRotate {
                token: "rma.01J0BF9QH3M2K8V7T6R5P4N3M2.secret".into(),
            }),
            &["token"],
        ),
        (
            Frame::new(TokenRotated {
                token_id: Some("01J0BF9QH3M2K8V7T6R5P4N3M2".into()),
            }),
            &["token_id"],
        ),
        (
            Frame::new(AgentUpgrade {
                version: "0.2.0".into(),
                url: "https://backup.example.com/download/agent/linux-x86_64".into(),
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            }),
            &["version", "url", "sha256"],
        ),
        (
            Frame::new(AgentUpgradeStatus {
                version: "0.2.0".into(),
                state: UpgradeState::Failed,
                error: Some("the new binary failed its pre-flight".into()),
            }),
            &["version", "state", "error"],
        ),
        (
            Frame::new(DownloadStart {
                download_id: "01J0BF9QH3M2K8V7T6R5P4N3M2".into(),
                snapshot_id: "4f1b9c2e".into(),
                path: "/srv/data".into(),
                format: downloads::ArchiveFormat::Zip,
                upload_url: Some(
                    "https://10.0.0.2:8080/agent/v1/downloads/01J0BF9QH3M2K8V7T6R5P4N3M2".into(),
                ),
            }),
            &["download_id", "snapshot_id", "path", "format", "upload_url"],
        ),
    ]
}

fn as_json(frame: &Frame) -> Value {
    serde_json::from_str(&frame.encode()).unwrap()
}

#[test]
fn the_samples_cover_every_kind_in_order() {
    let kinds: Vec<String> = one_of_each()
        .iter()
        .map(|(f, _)| f.message.kind().to_owned())
        .collect();
    assert_eq!(kinds, Message::KINDS);
}

#[test]
fn every_kind_encodes_with_its_type_and_field_names() {
    for (frame, fields) in one_of_each() {
        let json = as_json(&frame);
        let kind = frame.message.kind();
        assert_eq!(json["type"], kind);
        assert_eq!(
            json.get("id").and_then(Value::as_str),
            frame.id.as_deref(),
            "{kind}"
        );
        let payload = json["payload"]
            .as_object()
            .unwrap_or_else(|| panic!("{kind}: payload is not an object"));
        let mut names: Vec<&str> = payload.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "{kind}: payload fields");
    }
}

#[test]
fn every_kind_round_trips_through_encode_and_decode() {
    for (frame, _) in one_of_each() {
        assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    }
}

#[test]
fn enum_values_use_snake_case_on_the_wire() {
    let json = |frame: Frame| as_json(&frame)["payload"].clone();
    let result = json(Frame::new(CommandResult {
        job_id: JOB.into(),
        accepted: false,
        reason: Some(RejectReason::UnknownKind),
        message: None,
    }));
    assert_eq!(
        result,
        json!({"job_id": JOB, "accepted": false, "reason": "unknown_kind"})
    );
    for kind in JobKind::ALL {
        let run = json(Frame::new(CommandRun {
            job_id: JOB.into(),
            kind,
            params: Value::Null,
            repository: None,
        }));
        assert_eq!(run["kind"], kind.as_str());
        assert_eq!(kind.to_string(), kind.as_str());
    }
    let error = json(Frame::new(ErrorBody::new(ErrorCode::ProtocolTooOld, "old")));
    assert_eq!(error["code"], "protocol_too_old");
}

#[test]
fn hello_encodes_exactly() {
    let mut h = hello();
    h.restic_version = None;
    h.restic_error = Some("restic: not found in PATH".into());
    assert_eq!(
        as_json(&Frame::new(h)),
        json!({
            "type": "hello",
            "payload": {
                "protocol_version": 1,
                "agent_version": "0.1.0",
                "restic_version": null,
                "restic_error": "restic: not found in PATH",
                "hostname": "web-01",
                "os": "linux",
                "arch": "x86_64"
            }
        })
    );
    // Without an error, `restic_error` is left out rather than sent as null.
    assert!(as_json(&Frame::new(hello()))["payload"]
        .get("restic_error")
        .is_none());
}

#[test]
fn heartbeat_encodes_exactly() {
    assert_eq!(
        Frame::new(Heartbeat {}).encode(),
        r#"{"type":"heartbeat","payload":{}}"#
    );
}

#[test]
fn error_encodes_exactly_and_keeps_the_request_id() {
    let mut body = ErrorBody::new(ErrorCode::ProtocolTooOld, "upgrade the agent");
    body.url = Some("https://backup.example.com/docs/upgrading".into());
    assert_eq!(
        as_json(&Frame::with_id("req-1", body)),
        json!({
            "type": "error",
            "id": "req-1",
            "payload": {
                "code": "protocol_too_old",
                "message": "upgrade the agent",
                "url": "https://backup.example.com/docs/upgrading"
            }
        })
    );
    // No url, no id: both are left out.
    assert_eq!(
        as_json(&Frame::new(ErrorBody::new(ErrorCode::BadRequest, "no"))),
        json!({"type": "error", "payload": {"code": "bad_request", "message": "no"}})
    );
}

#[test]
fn tree_list_encodes_exactly_with_its_envelope_id() {
    let frame = Frame::with_id(
        REQUEST,
        TreeList {
            snapshot_id: "4d3f2a1b".into(),
            path: "/".into(),
        },
    );
    assert_eq!(
        as_json(&frame),
        json!({
            "type": "tree.list",
            "id": REQUEST,
            "payload": {"snapshot_id": "4d3f2a1b", "path": "/"}
        })
    );
    // The envelope keeps `type`, `id`, `payload` in that order.
    assert!(frame.encode().starts_with(&format!(
        r#"{{"type":"tree.list","id":"{REQUEST}","payload":"#
    )));
}

#[test]
fn frames_without_an_id_leave_it_out() {
    assert!(as_json(&Frame::new(Heartbeat {})).get("id").is_none());
    let frame = Frame::decode(r#"{"type":"heartbeat","id":null}"#).unwrap();
    assert_eq!(frame.id, None);
}

#[test]
fn unknown_types_decode_to_a_catch_all() {
    let text = r#"{"type":"telemetry.future","id":"x-1","payload":{"cpu":0.5,"tags":["a"]}}"#;
    let frame = Frame::decode(text).unwrap();
    assert_eq!(frame.id.as_deref(), Some("x-1"));
    assert_eq!(
        frame.message,
        Message::Unknown {
            kind: "telemetry.future".into(),
            payload: json!({"cpu": 0.5, "tags": ["a"]}),
        }
    );
    assert_eq!(frame.message.kind(), "telemetry.future");
    // Re-encoding gives back the same type, id and payload.
    assert_eq!(
        as_json(&frame),
        serde_json::from_str::<Value>(text).unwrap()
    );
}

#[test]
fn a_malformed_payload_names_the_kind_and_the_missing_field() {
    let err = Frame::decode(
        r#"{"type":"hello","payload":{"protocol_version":1,"agent_version":"0.1.0","hostname":"h","os":"linux"}}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::Payload { kind: "hello", .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), Some("hello"));
    let message = err.to_string();
    assert!(message.contains("`hello`"), "{message}");
    assert!(message.contains("missing field `arch`"), "{message}");
}

#[test]
fn a_mistyped_field_is_named_in_the_error() {
    let err = Frame::decode(
        r#"{"type":"schedule.ack","id":"req-1","payload":{"version":"seven","applied_at":"2025-06-01T09:15:02Z"}}"#,
    )
    .unwrap_err();
    assert_eq!(err.kind(), Some("schedule.ack"));
    let message = err.to_string();
    assert!(message.contains("`schedule.ack`"), "{message}");
    assert!(message.contains("`version`"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn a_mistyped_nested_field_is_named_with_its_path() {
    let err = Frame::decode(
        r#"{"type":"log.stream","payload":{"job_id":"j","lines":[{"seq":"one","ts":"2025-06-01T09:20:00Z","stream":"stdout","text":"x"}]}}"#,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("`log.stream`"), "{message}");
    assert!(message.contains("lines[0].seq"), "{message}");
}

#[test]
fn a_bad_timestamp_or_enum_value_is_a_payload_error() {
    for text in [
        r#"{"type":"job.started","payload":{"job_id":"j","started_at":"yesterday"}}"#,
        r#"{"type":"command.run","payload":{"job_id":"j","kind":"defragment"}}"#,
        r#"{"type":"job.finished","payload":{"job_id":"j","status":"exploded","finished_at":"2025-06-01T09:21:36Z"}}"#,
    ] {
        let err = Frame::decode(text).unwrap_err();
        assert!(
            matches!(err, DecodeError::Payload { .. }),
            "{text}: {err:?}"
        );
    }
}

#[test]
fn text_that_is_not_an_envelope_is_an_envelope_error() {
    for text in [
        "this is not json",
        "",
        "[1,2,3]",
        "42",
        r#""hello""#,
        r#"{"payload":{}}"#,
        r#"{"type":5,"payload":{}}"#,
        r#"{"type":null}"#,
        r#"{"type":"heartbeat","id":7}"#,
        r#"{"type":"heartbeat""#,
    ] {
        let err = Frame::decode(text).unwrap_err();
        assert!(matches!(err, DecodeError::Envelope(_)), "{text:?}: {err:?}");
        assert_eq!(err.kind(), None);
        assert!(
            err.to_string().starts_with("frame is not a valid envelope"),
            "{err}"
        );
    }
    let err = Frame::decode(r#"{"payload":{}}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `type`"), "{err}");
}

#[test]
fn a_payload_that_is_not_an_object_is_a_payload_error() {
    let err = Frame::decode(r#"{"type":"schedule.ack","payload":"seven"}"#).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Payload {
                kind: "schedule.ack",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_missing_or_null_payload_is_an_empty_one() {
    for text in [
        r#"{"type":"heartbeat"}"#,
        r#"{"type":"heartbeat","payload":null}"#,
        r#"{"type":"heartbeat","payload":{}}"#,
    ] {
        assert_eq!(
            Frame::decode(text).unwrap().message,
            Message::Heartbeat(Heartbeat {}),
            "{text}"
        );
    }
    for text in [r#"{"type":"hello"}"#, r#"{"type":"hello","payload":null}"#] {
        let err = Frame::decode(text).unwrap_err();
        assert!(
            matches!(err, DecodeError::Payload { kind: "hello", .. }),
            "{text}: {err:?}"
        );
        assert!(
            err.to_string().contains("missing field `protocol_version`"),
            "{err}"
        );
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let frame = Frame::decode(
        r#"{
            "type": "schedule.set",
            "trace_id": "abc",
            "payload": {
                "version": 3,
                "signature": "future",
                "schedules": [
                    {"id": "s1", "kind": "check", "cron": "@weekly", "priority": 9}
                ]
            }
        }"#,
    )
    .unwrap();
    let Message::ScheduleSet(set) = frame.message else {
        panic!("expected schedule.set, got {frame:?}");
    };
    assert_eq!(set.version, 3);
    assert_eq!(set.schedules.len(), 1);
    // Defaults fill in what was left out.
    let schedule = &set.schedules[0];
    assert!(schedule.enabled);
    assert_eq!(schedule.jitter_seconds, 0);
    assert_eq!(schedule.timezone, None);
    assert_eq!(schedule.params, Value::Null);

    let mut h = as_json(&Frame::new(hello()));
    h["payload"]["capabilities"] = json!(["tree.list"]);
    let frame = Frame::decode(&h.to_string()).unwrap();
    assert_eq!(frame.message, Message::Hello(hello()));
}

#[test]
fn optional_fields_may_be_absent() {
    let frame = Frame::decode(r#"{"type":"config.update","payload":{}}"#).unwrap();
    assert_eq!(
        frame.message,
        Message::ConfigUpdate(ConfigUpdate {
            repository: None,
            settings: AgentSettings {
                heartbeat_seconds: DEFAULT_HEARTBEAT_SECS
            },
        })
    );
    let frame = Frame::decode(r#"{"type":"job.progress","payload":{"job_id":"j"}}"#).unwrap();
    assert_eq!(
        frame.message,
        Message::JobProgress(JobProgress {
            job_id: "j".into(),
            ..JobProgress::default()
        })
    );
    let frame = Frame::decode(r#"{"type":"repo.stats"}"#).unwrap();
    assert_eq!(frame.message, Message::RepoStats(RepoStats::default()));
    let frame = Frame::decode(
        r#"{"type":"hello","payload":{"protocol_version":1,"agent_version":"0.1.0","hostname":"h","os":"linux","arch":"x86_64"}}"#,
    )
    .unwrap();
    let Message::Hello(h) = frame.message else {
        panic!("expected hello");
    };
    assert_eq!((h.restic_version, h.restic_error), (None, None));
}

#[test]
fn unknown_error_codes_decode_as_unknown() {
    let frame = Frame::decode(
        r#"{"type":"error","payload":{"code":"im_a_teapot","message":"short and stout"}}"#,
    )
    .unwrap();
    assert_eq!(
        frame.message,
        Message::Error(ErrorBody::new(ErrorCode::Unknown, "short and stout"))
    );
}

#[test]
fn unknown_reject_reasons_decode_as_other() {
    let frame = Frame::decode(
        r#"{"type":"command.result","payload":{"job_id":"j","accepted":false,"reason":"quota_exceeded"}}"#,
    )
    .unwrap();
    let Message::CommandResult(result) = frame.message else {
        panic!("expected command.result");
    };
    assert_eq!(result.reason, Some(RejectReason::Other));
}

#[test]
fn unknown_tree_entry_types_decode_as_other() {
    let frame = Frame::decode(
        r#"{"type":"tree.list.result","id":"r","payload":{"entries":[
            {"name":"fifo","type":"fifo","path":"/run/fifo"},
            {"name":"link","type":"symlink","path":"/run/link"}
        ]}}"#,
    )
    .unwrap();
    let Message::TreeListResult(result) = frame.message else {
        panic!("expected tree.list.result");
    };
    let types: Vec<EntryType> = result.entries.iter().map(|e| e.entry_type).collect();
    assert_eq!(types, [EntryType::Other, EntryType::Symlink]);
}

#[test]
fn repository_debug_output_hides_the_password_and_env_values() {
    let repository = RepositoryConfig {
        url: "s3:s3.amazonaws.com/bucket".into(),
        password: "hunter2-repo-password".into(),
        env: BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".into(), "AKIA-ACCESS-VALUE".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t-key-value".into()),
        ]),
        copy_to: Some(rm_protocol::CopyTarget {
            url: "rest:http://offsite:copy-url-secret@backup.lan:8000/".into(),
            password: "copy-repo-password".into(),
            env: BTreeMap::from([("RESTIC_REST_PASSWORD".into(), "copy-env-secret".into())]),
        }),
    };
    let frame = Frame::new(ConfigUpdate {
        repository: Some(repository.clone()),
        settings: AgentSettings::default(),
    });
    for debug in [
        format!("{repository:?}"),
        format!("{repository:#?}"),
        format!("{frame:?}"),
    ] {
        for secret in [
            "hunter2-repo-password",
            "AKIA-ACCESS-VALUE",
            "s3cr3t-key-value",
            "copy-url-secret",
            "copy-repo-password",
            "copy-env-secret",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        // Still useful for debugging: the URL and which variables are set.
        assert!(debug.contains("s3:s3.amazonaws.com/bucket"), "{debug}");
        assert!(debug.contains("AWS_SECRET_ACCESS_KEY"), "{debug}");
        assert!(debug.contains("backup.lan:8000"), "{debug}");
        assert!(debug.contains("RESTIC_REST_PASSWORD"), "{debug}");
    }
    // The wire, of course, carries them, and reads back the same.
    let wire = frame.encode();
    assert!(wire.contains("hunter2-repo-password") && wire.contains("copy-repo-password"));
    assert_eq!(Frame::decode(&wire).unwrap(), frame);
    // Without a copy target the field is left out, as older peers wrote it.
    let plain = RepositoryConfig {
        copy_to: None,
        ..repository
    };
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("copy_to").is_none(), "{json}");
    let older: RepositoryConfig = serde_json::from_value(serde_json::json!({
        "url": "/srv/restic", "password": "pw"
    }))
    .unwrap();
    assert!(older.copy_to.is_none());
}

#[test]
fn api_debug_output_hides_passwords_and_tokens() {
    let login = LoginRequest {
        username: "admin".into(),
        password: "correct-horse-battery".into(),
    };
    let debug = format!("{login:?}");
    assert!(!debug.contains("correct-horse-battery"), "{debug}");
    assert!(debug.contains("admin"), "{debug}");

    let enroll = EnrollRequest {
        token: "rme.01J0BF00000000000000000000.enrol-secret-part".into(),
        name: Some("web".into()),
        hostname: "web-01".into(),
        labels: Default::default(),
    };
    let debug = format!("{enroll:?}");
    assert!(!debug.contains("enrol-secret-part"), "{debug}");
    assert!(debug.contains("web-01"), "{debug}");

    let enrolled = EnrollResponse {
        host_id: "01J0BG00000000000000000000".into(),
        agent_token: "rma.01J0BH00000000000000000000.agent-secret-part".into(),
    };
    let debug = format!("{enrolled:?}");
    assert!(!debug.contains("agent-secret-part"), "{debug}");
    assert!(debug.contains("01J0BG00000000000000000000"), "{debug}");
}

#[test]
fn u64_counters_accept_values_at_and_above_two_to_the_63() {
    let text = r#"{"type":"job.progress","payload":{
        "job_id":"j","percent":100,
        "files_done":9223372036854775808,"files_total":9223372036854775808,
        "bytes_done":18446744073709551615,"bytes_total":18446744073709551615,
        "eta_seconds":9223372036854775808
    }}"#;
    let frame = Frame::decode(text).unwrap();
    let Message::JobProgress(progress) = &frame.message else {
        panic!("expected job.progress");
    };
    assert_eq!(progress.files_done, 1 << 63);
    assert_eq!(progress.files_total, 9_223_372_036_854_775_808);
    assert_eq!(progress.bytes_done, u64::MAX);
    assert_eq!(progress.eta_seconds, Some(1 << 63));
    assert_eq!(progress.percent, 100.0);
    assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
    assert!(frame.encode().contains("9223372036854775808"));
}

#[test]
fn negative_or_oversized_counters_are_rejected() {
    for value in ["-1", "18446744073709551616", "1.5"] {
        let text =
            format!(r#"{{"type":"job.progress","payload":{{"job_id":"j","files_done":{value}}}}}"#);
        let err = Frame::decode(&text).unwrap_err();
        assert!(err.to_string().contains("files_done"), "{value}: {err}");
    }
}

#[test]
fn a_progress_sample_with_a_non_finite_percent_still_decodes() {
    // serde_json writes NaN and infinities as `null`; the sample must not
    // turn into a malformed-payload error on the other side.
    for percent in [f64::NAN, f64::INFINITY] {
        let frame = Frame::new(JobProgress {
            job_id: "j".into(),
            percent,
            ..JobProgress::default()
        });
        let Message::JobProgress(progress) = Frame::decode(&frame.encode()).unwrap().message else {
            panic!("expected job.progress");
        };
        assert_eq!(progress.percent, 0.0);
    }
}

#[test]
fn timestamps_with_an_offset_are_read_as_utc() {
    let frame = Frame::decode(
        r#"{"type":"schedule.ack","payload":{"version":1,"applied_at":"2025-06-01T11:15:02+02:00"}}"#,
    )
    .unwrap();
    let Message::ScheduleAck(ack) = frame.message else {
        panic!("expected schedule.ack");
    };
    assert_eq!(ack.applied_at, at("2025-06-01T09:15:02Z"));
    assert!(Frame::new(ack)
        .encode()
        .contains(r#""applied_at":"2025-06-01T09:15:02Z""#));
}

#[test]
fn envelopes_convert_to_and_from_frames() {
    let frame = Frame::with_id(REQUEST, TreeListResult::default());
    let envelope = frame.to_envelope();
    assert_eq!(envelope.kind, "tree.list.result");
    assert_eq!(envelope.id.as_deref(), Some(REQUEST));
    assert_eq!(Frame::from_envelope(envelope).unwrap(), frame);
}

#[test]
fn the_protocol_constants_match_the_documented_values() {
    assert_eq!(CURRENT_PROTOCOL_VERSION, 1);
    const { assert!(MIN_PROTOCOL_VERSION <= CURRENT_PROTOCOL_VERSION) };
    assert_eq!(MAX_FRAME_BYTES, 16 * 1024 * 1024);
    assert_eq!(HELLO_TIMEOUT_SECS, 10);
    assert_eq!(DEFAULT_HEARTBEAT_SECS, 30);
    assert_eq!(
        [
            close_code::GOING_AWAY,
            close_code::POLICY,
            close_code::REVOKED,
            close_code::REPLACED,
            close_code::IDLE
        ],
        [1001, 1008, 4001, 4002, 4003]
    );
}

#[test]
fn token_rotation_frames_round_trip_and_debug_hides_the_token() {
    let frame = Frame::new(TokenRotate {
        token: "rma.01J0BF00000000000000000000.rotated-secret-part".into(),
    });
    let debug = format!("{frame:?}");
    assert!(!debug.contains("rotated-secret-part"), "{debug}");
    let decoded = Frame::decode(&frame.encode()).unwrap();
    assert_eq!(decoded, frame);

    // The confirmation's id is optional: `{}` confirms the pending token.
    let bare = Frame::decode(r#"{"type":"token.rotated","payload":{}}"#).unwrap();
    assert_eq!(bare.message, Message::TokenRotated(TokenRotated::default()));
    let missing = Frame::decode(r#"{"type":"token.rotate","payload":{}}"#).unwrap_err();
    assert!(missing.to_string().contains("token"), "{missing}");
}

/// `hello` as protocol-1 servers from before agent upgrades read it: the
/// same fields less `platform`, frozen here. Compatibility in both
/// directions rests on additive, optional fields.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct HelloBeforeUpgrades {
    protocol_version: u32,
    agent_version: String,
    #[serde(default)]
    restic_version: Option<String>,
    #[serde(default)]
    restic_error: Option<String>,
    hostname: String,
    os: String,
    arch: String,
    #[serde(default)]
    running_jobs: Vec<String>,
    #[serde(default)]
    spooled_jobs: Vec<String>,
    #[serde(default)]
    hooks: Vec<String>,
    #[serde(default)]
    hooks_refused: Vec<RefusedHook>,
}

#[test]
fn hellos_cross_the_agent_upgrade_change_in_both_directions() {
    // A current agent's hello, read by a server from before upgrades.
    let mut current = hello();
    current.platform = Some("linux-x86_64".into());
    let json = as_json(&Frame::new(current));
    assert_eq!(json["payload"]["platform"], "linux-x86_64");
    let old: HelloBeforeUpgrades = serde_json::from_value(json["payload"].clone()).unwrap();
    assert_eq!(old.protocol_version, CURRENT_PROTOCOL_VERSION);
    // An agent from before upgrades, read by this server: no platform (so
    // it is never sent `agent.upgrade`), the same protocol version.
    let mut before = as_json(&Frame::new(hello()));
    assert!(
        before["payload"].get("platform").is_none(),
        "omitted when unset"
    );
    before["payload"]
        .as_object_mut()
        .unwrap()
        .remove("platform");
    let frame = Frame::decode(&before.to_string()).unwrap();
    let Message::Hello(h) = frame.message else {
        panic!("not a hello: {frame:?}")
    };
    assert_eq!(h.platform, None);
    assert!(h.protocol_version >= MIN_PROTOCOL_VERSION);
    // An upgrade state from a newer agent still decodes.
    let newer = json!({"type": "agent.upgrade.status", "payload": {"version": "9.0.0", "state": "rebooting"}});
    let frame = Frame::decode(&newer.to_string()).unwrap();
    let Message::AgentUpgradeStatus(status) = frame.message else {
        panic!("not a status: {frame:?}")
    };
    assert_eq!(status.state, UpgradeState::Unknown);
}
