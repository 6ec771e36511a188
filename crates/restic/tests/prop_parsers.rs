//! Property tests of every restic output parser: recorded output cut short,
//! random bytes spliced into real lines, arbitrary lines, huge numbers and
//! deeply nested JSON, for every command and every restic version we know.
//! Nothing may panic, and what comes out stays within bounds: progress
//! percentages finite and within 0–100, ETAs sane, log lines and error
//! texts capped, statistics an object.
//!
//! `PROPTEST_CASES` raises the case count (CI keeps the modest default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config;
use rm_restic::{
    classify, parse_ls, parse_snapshots, parse_stats, parse_version_output, replay, Command, Event,
    Finished, ResticVersion, RetentionPolicy, StatsMode, Status,
};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = None;
    config
}

/// Longest log line: 64 KiB plus the truncation marker.
const MAX_LINE: usize = 64 * 1024 + 64;
/// Longest error text a run reports: 4 KiB plus the ellipsis.
const MAX_ERROR: usize = 4096 + 3;
/// restic's "unknown" ETA starts beyond a year.
const MAX_ETA: u64 = 366 * 24 * 3600;

/// Every line of every recorded fixture (stdout and stderr).
fn fixture_lines() -> &'static [String] {
    static LINES: OnceLock<Vec<String>> = OnceLock::new();
    LINES.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut lines = Vec::new();
        collect_lines(&root, &mut lines);
        assert!(
            lines.len() > 50,
            "fixtures not found under {}",
            root.display()
        );
        lines
    })
}

fn collect_lines(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_lines(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "stdout" || e == "stderr")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            out.extend(text.lines().map(str::to_owned));
        }
    }
}

fn commands() -> Vec<Command> {
    vec![
        Command::Init,
        Command::Backup {
            paths: vec!["/src".into()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: Default::default(),
        },
        Command::Forget {
            policy: RetentionPolicy::keep_last(3),
            host: None,
        },
        Command::Prune,
        Command::Check {
            read_data_subset: None,
        },
        Command::Unlock,
        Command::Snapshots { host: None },
        Command::Stats {
            mode: StatsMode::RestoreSize,
        },
        Command::Stats {
            mode: StatsMode::RawData,
        },
        Command::Restore {
            snapshot_id: "deadbeef".into(),
            include: vec![],
            target: "/tmp/r".into(),
            verify: false,
        },
        Command::Ls {
            snapshot_id: "deadbeef".into(),
            path: "/src".into(),
        },
        Command::CatConfig,
        Command::ListLocks,
        Command::Copy {
            from: rm_restic::Repository::new("/primary", "pw"),
            host: Some("vm".into()),
            tags: vec![],
            snapshot_ids: vec![],
        },
        Command::InitFrom {
            from: rm_restic::Repository::new("/primary", "pw"),
        },
    ]
}

fn version() -> impl Strategy<Value = ResticVersion> {
    proptest::sample::select(vec![
        ResticVersion::new(0, 14, 0),
        ResticVersion::new(0, 15, 2),
        ResticVersion::new(0, 16, 4),
        ResticVersion::new(0, 17, 0),
        ResticVersion::new(0, 17, 1),
        ResticVersion::new(0, 18, 0),
        ResticVersion::new(0, 19, 0),
        ResticVersion::new(1, 0, 0),
    ])
}

fn fixture_line() -> impl Strategy<Value = Vec<u8>> {
    any::<proptest::sample::Index>().prop_map(|i| {
        let lines = fixture_lines();
        lines[i.index(lines.len())].as_bytes().to_vec()
    })
}

/// Numbers restic never prints but a broken or hostile one might.
const ODD_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.5",
    "1.5",
    "-0.0",
    "null",
    "\"12\"",
    "[]",
    "{}",
    "true",
];

/// Fields the parsers read, to be filled with odd values.
const FIELDS: &[&str] = &[
    "percent_done",
    "total_files",
    "files_done",
    "total_bytes",
    "bytes_done",
    "seconds_remaining",
    "seconds_elapsed",
    "current_files",
    "action",
    "files_new",
    "data_added",
    "total_duration",
    "snapshot_id",
    "dry_run",
    "files_restored",
    "files_skipped",
    "bytes_restored",
    "bytes_skipped",
    "num_errors",
    "broken_packs",
    "error",
    "during",
    "item",
    "message",
    "code",
    "total_size",
    "total_file_count",
    "snapshots_count",
    "compression_ratio",
    "time",
    "id",
    "short_id",
    "paths",
    "summary",
    "keep",
    "remove",
    "name",
    "type",
    "path",
    "size",
    "mode",
    "mtime",
    "version",
    "Op",
    "Path",
    "Err",
];

const MESSAGE_TYPES: &[&str] = &[
    "status",
    "summary",
    "verbose_status",
    "error",
    "exit_error",
    "initialized",
    "snapshot",
    "node",
    "version",
    "brand_new_type",
];

/// A JSON message line with odd values in the fields the parsers read.
fn odd_json_line() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(MESSAGE_TYPES),
        any::<bool>(),
        proptest::collection::vec(
            (
                proptest::sample::select(FIELDS),
                proptest::sample::select(ODD_NUMBERS),
            ),
            0..8,
        ),
    )
        .prop_map(|(kind, struct_type, fields)| {
            let key = if struct_type {
                "struct_type"
            } else {
                "message_type"
            };
            let mut line = format!(r#"{{"{key}":"{kind}""#);
            for (field, value) in fields {
                line.push_str(&format!(r#","{field}":{value}"#));
            }
            line.push('}');
            line.into_bytes()
        })
}

/// JSON nested far beyond anything restic prints.
fn deep_json_line() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(MESSAGE_TYPES),
        1usize..5000,
        any::<bool>(),
    )
        .prop_map(|(kind, depth, objects)| {
            let (open, close) = if objects {
                (r#"{"a":"#, "}")
            } else {
                ("[", "]")
            };
            format!(
                r#"{{"message_type":"{kind}","error":{}1{}}}"#,
                open.repeat(depth),
                close.repeat(depth)
            )
            .into_bytes()
        })
}

/// Text lines the parsers look for, with odd numbers and units.
fn odd_text_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        ("[0-9.e+-]{0,30}", "(B|KiB|MiB|GiB|TiB|XB|)")
            .prop_map(|(n, unit)| format!("total prune:   4 blobs / {n} {unit}")),
        Just("no errors were found".to_owned()),
        Just("Fatal: repository contains errors".to_owned()),
        Just("Fatal: wrong password or no key found".to_owned()),
        "restic [0-9.a-z+-]{0,20} compiled with go".prop_map(|s| s),
        "[0-9a-f]{64}".prop_map(|s| s),
        Just("{".to_owned()),
        Just("[".to_owned()),
        Just("}".to_owned()),
        Just("]".to_owned()),
        "\u{1b}\\[[0-9;]{0,6}[A-Za-z]?.{0,20}\r.{0,20}".prop_map(|s| s),
    ]
    .prop_map(String::into_bytes)
}

/// Lines far longer than any log line may be, as text or inside JSON.
fn long_line() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(vec![
            "",
            "Fatal: ",
            "Warning: ",
            r#"{"message_type":"exit_error","code":1,"message":""#,
            r#"{"message_type":"error","error":{"message":""#,
            r#"{"message_type":"summary","snapshot_id":""#,
            r#"{"message_type":"status","current_files":[""#,
        ]),
        60_000usize..200_000,
        proptest::sample::select(vec!["x", "é", "\u{1F600}"]),
    )
        .prop_map(|(head, len, unit)| {
            let body = unit.repeat(len / unit.len());
            let tail = match head {
                h if h.contains("current_files") => "\"]}",
                h if h.contains(r#""error":{"#) => "\"}}",
                h if h.starts_with('{') => "\"}",
                _ => "",
            };
            format!("{head}{body}{tail}").into_bytes()
        })
}

/// One output line: real, damaged, or made up.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => fixture_line(),
        // Cut short anywhere, even inside a UTF-8 sequence.
        2 => (fixture_line(), any::<proptest::sample::Index>()).prop_map(|(mut l, at)| {
            l.truncate(at.index(l.len() + 1));
            l
        }),
        // Random bytes spliced in.
        2 => (
            fixture_line(),
            any::<proptest::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..16),
        )
            .prop_map(|(mut l, at, junk)| {
                let at = at.index(l.len() + 1);
                l.splice(at..at, junk);
                l
            }),
        2 => odd_json_line(),
        1 => deep_json_line(),
        2 => odd_text_line(),
        1 => long_line(),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

fn output() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(line(), 0..24).prop_map(|lines| lines.join(&b'\n'))
}

fn check_finished(finished: &Finished) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        finished.error.is_none(),
        finished.status == Status::Succeeded
    );
    if let Some(error) = &finished.error {
        prop_assert!(error.len() <= MAX_ERROR, "error of {} bytes", error.len());
    }
    prop_assert!(finished.stats.is_object(), "{}", finished.stats);
    if let Some(id) = &finished.snapshot_id {
        prop_assert!(!id.is_empty());
    }
    Ok(())
}

fn check_events(events: &[Event]) -> Result<(), TestCaseError> {
    for event in events {
        match event {
            Event::Line { text, .. } => {
                prop_assert!(text.len() <= MAX_LINE, "line of {} bytes", text.len());
            }
            Event::Progress(p) => {
                prop_assert!(
                    p.percent.is_finite() && (0.0..=100.0).contains(&p.percent),
                    "{:?}",
                    p
                );
                prop_assert!(p.eta_seconds.is_none_or(|s| s <= MAX_ETA), "{:?}", p);
            }
            Event::Started { .. } => prop_assert!(false, "replay started nothing"),
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn any_output_of_any_command_stays_in_bounds(
        command in proptest::sample::select(commands()),
        version in version(),
        stdout in output(),
        stderr in output(),
        exit_code in proptest::option::of(prop_oneof![0..20i32, any::<i32>()]),
    ) {
        let (events, finished) = replay(&command, version, &stdout, &stderr, exit_code);
        check_events(&events)?;
        check_finished(&finished)?;
    }

    #[test]
    fn document_parsers_never_panic(text in output()) {
        let text = String::from_utf8_lossy(&text);
        let _ = parse_ls(&text);
        let _ = parse_snapshots(&text);
        if let Ok(stats) = parse_stats(&text) {
            for ratio in [stats.compression_ratio, stats.compression_progress, stats.compression_space_saving].into_iter().flatten() {
                prop_assert!(ratio.is_finite());
            }
        }
        let _ = parse_version_output(&text);
    }

    #[test]
    fn documents_with_odd_values_never_panic(
        fields in proptest::collection::vec(
            (proptest::sample::select(FIELDS), proptest::sample::select(ODD_NUMBERS)),
            0..10,
        ),
        array in any::<bool>(),
    ) {
        let object = format!(
            "{{{}}}",
            fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect::<Vec<_>>().join(",")
        );
        let document = if array { format!("[{object},{object}]") } else { object };
        let _ = parse_snapshots(&document);
        let _ = parse_stats(&document);
        let _ = parse_ls(&document);
        let _ = parse_version_output(&document);
    }

    #[test]
    fn classify_never_panics(
        command in proptest::sample::select(commands()),
        version in version(),
        exit_code in proptest::option::of(any::<i32>()),
        stderr in output(),
    ) {
        let (status, kind) = classify(&command, version, exit_code, &String::from_utf8_lossy(&stderr));
        if exit_code == Some(0) {
            prop_assert_eq!((status, kind), (Status::Succeeded, None));
        }
    }
}

/// The recorded fixtures themselves, replayed whole for every command:
/// output of one command read as another's must not trip anything either.
#[test]
fn every_fixture_as_every_command() {
    let all = fixture_lines().join("\n");
    let recorded = [(0, 14, 0), (0, 18, 0), (0, 19, 1)];
    for (major, minor, patch) in recorded {
        let version = ResticVersion::new(major, minor, patch);
        for command in commands() {
            for exit_code in [1, 3, 10, 11, 12, 130] {
                let (events, finished) = replay(
                    &command,
                    version,
                    all.as_bytes(),
                    all.as_bytes(),
                    Some(exit_code),
                );
                check_events(&events).unwrap();
                check_finished(&finished).unwrap();
            }
        }
    }
}
