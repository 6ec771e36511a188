//! Replays recorded restic output (tests/fixtures) through the collector:
//! the parsers are only as good as the real output they were tried on.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::command::{RetentionPolicy, StatsMode};
use crate::event::Progress;
use crate::parse::ls::parse_ls;
use crate::parse::snapshots::parse_snapshots;
use crate::parse::stats::parse_stats;

const V14: ResticVersion = ResticVersion::new(0, 14, 0);

fn fixture(name: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).ok()
}

/// What one replayed run produced.
struct Replay {
    events: Vec<Event>,
    finished: Finished,
}

impl Replay {
    fn lines(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Line { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn progress(&self) -> Vec<&Progress> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Progress(p) => Some(p),
                _ => None,
            })
            .collect()
    }
}

/// Feeds `<case>.stdout` and `<case>.stderr` (either may be missing) and
/// ends with `<case>.rc`, or `rc` when there is no such file.
fn replay(command: &Command, version: ResticVersion, case: &str, rc: i32) -> Replay {
    let stdout = fixture(&format!("{case}.stdout"));
    let stderr = fixture(&format!("{case}.stderr"));
    assert!(stdout.is_some() || stderr.is_some(), "no fixture {case}");
    let rc = fixture(&format!("{case}.rc"))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(rc);
    let (events, finished) = super::replay(
        command,
        version,
        stdout.unwrap_or_default().as_bytes(),
        stderr.unwrap_or_default().as_bytes(),
        Some(rc),
    );
    Replay { events, finished }
}

fn backup() -> Command {
    Command::Backup {
        paths: vec!["src".into()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options: Default::default(),
    }
}

fn ls() -> Command {
    Command::Ls {
        snapshot_id: "deadbeef".into(),
        path: "/src/a".into(),
    }
}

#[test]
fn backup_of_0_14() {
    let run = replay(&backup(), V14, "v0.14/backup", 0);
    let f = &run.finished;
    assert_eq!(
        (f.status, f.kind, f.error.as_deref()),
        (Status::Succeeded, None, None)
    );
    let id = f.snapshot_id.clone().unwrap_or_default();
    assert_eq!(id.len(), 8, "0.14 gives the short id: {id}");
    assert_eq!(f.stats["files_new"], json!(4));
    assert_eq!(f.stats["dirs_new"], json!(4));
    assert_eq!(f.stats["snapshot_id"], json!(id));
    assert!(f.stats.get("message_type").is_none());
    assert_eq!(run.progress().len(), 1);
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "only the summary is logged: {lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "snapshot {id} saved: 4 new files, 0 changed, 0 unmodified, 2.9 MiB added"
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn backup_progress_of_0_14() {
    let run = replay(&backup(), V14, "v0.14/backup_progress", 0);
    let progress = run.progress();
    assert!(progress.len() >= 3, "{progress:?}");
    let last = progress[progress.len() - 1];
    assert!(last.percent > 50.0 && last.percent <= 100.0, "{last:?}");
    assert_eq!(last.bytes_total, 1 << 30);
    assert!(last.bytes_done > 0);
    assert_eq!(last.current_files, ["/sparse/zeros"]);
    assert!(progress.iter().any(|p| p.eta_seconds.is_some()));
    // No raw status JSON in the log.
    assert!(run.lines().iter().all(|l| !l.contains("\"status\"")));
}

#[test]
fn backup_with_an_absurd_eta_and_an_error_line() {
    let run = replay(&backup(), V14, "v0.14/backup_stdin_empty", 1);
    assert!(run.progress().iter().all(|p| p.eta_seconds.is_none()));
    let f = &run.finished;
    assert_eq!(f.status, Status::Failed);
    assert_eq!(
        f.error.as_deref(),
        Some("Fatal: unable to save snapshot: snapshot is empty")
    );
    assert!(run
        .lines()
        .contains(&"error during archival of /held.txt: read /held.txt: failed"));
}

#[test]
fn backup_with_a_missing_path_is_partial_like_0_19() {
    let run = replay(&backup(), V14, "v0.14/backup_missing_path", 0);
    let f = &run.finished;
    assert_eq!(f.status, Status::Partial);
    assert!(f.snapshot_id.is_some());
    assert_eq!(
        f.error.as_deref(),
        Some("src/doesnotexist does not exist, skipping")
    );

    let run = replay(&backup(), V14, "v0.14/backup_all_missing", 1);
    let f = &run.finished;
    assert_eq!(
        (f.status, f.kind),
        (Status::Failed, Some(FailureKind::SourceNotFound))
    );
    assert_eq!(
        f.error.as_deref(),
        Some("Fatal: all target directories/files do not exist")
    );
}

#[test]
fn newer_backup_shapes() {
    let v15 = ResticVersion::new(0, 15, 0);
    let run = replay(&backup(), v15, "newer/v0.15_backup", 0);
    assert_eq!(run.finished.snapshot_id.as_ref().map(String::len), Some(64));
    // scan_finished under `status` is not progress.
    assert_eq!(run.progress().len(), 1);

    let run = replay(
        &backup(),
        ResticVersion::new(0, 17, 0),
        "newer/v0.17_skip_if_unchanged",
        0,
    );
    assert_eq!(run.finished.status, Status::Succeeded);
    assert_eq!(run.finished.snapshot_id, None);
    assert!(run.lines()[0].starts_with("no snapshot saved"));

    let v171 = ResticVersion::new(0, 17, 1);
    let run = replay(&backup(), v171, "newer/v0.17.1_backup_partial", 3);
    let f = &run.finished;
    assert_eq!(f.status, Status::Partial);
    assert!(f.snapshot_id.is_some());
    assert_eq!(
        f.error.as_deref(),
        Some("Warning: at least one source file could not be read")
    );
    assert!(run.lines().contains(
        &"error during archival of /data/src/unreadable.txt: open /data/src/unreadable.txt: permission denied"
    ));

    let v18 = ResticVersion::new(0, 18, 0);
    let run = replay(&backup(), v18, "newer/v0.18_backup", 0);
    assert_eq!(
        run.finished.stats["backup_start"],
        json!("2025-04-01T10:00:00Z")
    );
    assert_eq!(run.progress()[0].eta_seconds, Some(2));
    let run = replay(&backup(), v18, "newer/v0.18_backup_partial", 3);
    assert_eq!(run.finished.status, Status::Partial);
    assert_eq!(
        run.finished.error.as_deref(),
        Some("Warning: at least one source file could not be read")
    );
}

#[test]
fn failures_of_0_14_are_recognised() {
    let cases = [
        ("v0.14/wrong_password", FailureKind::WrongPassword, "Fatal: wrong password or no key found"),
        ("v0.14/no_repository", FailureKind::NoRepository, "Fatal: unable to open config file: stat /scratch/nonexistent/config: no such file or directory\nIs there a repository at the following location?\n/scratch/nonexistent"),
        ("v0.14/rest_no_repository", FailureKind::NoRepository, "Fatal: unable to open config file: <config/> does not exist"),
        ("v0.14/rest_unreachable", FailureKind::Unreachable, "connection refused"),
        ("v0.14/init_exists", FailureKind::AlreadyInitialized, "config file already exists"),
        ("v0.14/locked", FailureKind::Locked, "repository is already locked by PID"),
    ];
    for (case, kind, words) in cases {
        let run = replay(&Command::CatConfig, V14, case, 1);
        let f = &run.finished;
        assert_eq!((f.status, f.kind), (Status::Failed, Some(kind)), "{case}");
        let error = f.error.clone().unwrap_or_default();
        assert!(error.contains(words), "{case}: {error}");
        assert!(!run.lines().is_empty(), "{case}: stderr is logged");
    }
    // The lock message has no "Fatal:": the tail explains it.
    let run = replay(
        &Command::Check {
            read_data_subset: None,
        },
        V14,
        "v0.14/locked",
        1,
    );
    let error = run.finished.error.unwrap_or_default();
    assert!(
        error.contains("the `unlock` command can be used"),
        "{error}"
    );
}

#[test]
fn newer_failures_use_exit_codes_and_exit_error() {
    let v17 = ResticVersion::new(0, 17, 0);
    let run = replay(&Command::CatConfig, v17, "newer/v0.17_no_repository", 10);
    assert_eq!(run.finished.kind, Some(FailureKind::NoRepository));
    let v18 = ResticVersion::new(0, 18, 0);
    let run = replay(
        &Command::Snapshots { host: None },
        v18,
        "newer/v0.18_wrong_password",
        12,
    );
    let f = &run.finished;
    assert_eq!(
        (f.status, f.kind),
        (Status::Failed, Some(FailureKind::WrongPassword))
    );
    assert_eq!(
        f.error.as_deref(),
        Some("Fatal: wrong password or no key found")
    );
    assert_eq!(run.lines(), ["Fatal: wrong password or no key found"]);
}

#[test]
fn sigint_of_0_14_is_clean_text() {
    let run = replay(&backup(), V14, "v0.14/sigint", 130);
    assert_eq!(run.finished.status, Status::Failed);
    assert_eq!(
        run.finished.error.as_deref(),
        Some("signal interrupt received, cleaning up")
    );
    // And when we were the ones stopping it:
    let mut collector = Collector::new(&Command::Prune, V14);
    let _ = collector.on_line(
        Stream::Stderr,
        RawLine {
            bytes: b"\x1b[2Ksignal interrupt received, cleaning up".to_vec(),
            dropped: 0,
        },
    );
    let ended = Ended {
        exit_code: Some(130),
        signal: None,
        stopped: Some(StopReason::TimedOut),
    };
    let f = collector.finish(ended, &Limits::new(Duration::from_secs(30)));
    assert_eq!(
        (f.status, f.error.as_deref()),
        (Status::TimedOut, Some("timed out after 30s"))
    );
}

#[test]
fn snapshots_documents() {
    let run = replay(
        &Command::Snapshots { host: None },
        V14,
        "v0.14/snapshots",
        0,
    );
    assert_eq!(run.finished.status, Status::Succeeded);
    let list = parse_snapshots(run.finished.output.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.len(), 4);
    assert!(list
        .iter()
        .all(|s| s.id.len() == 64 && s.short_id.len() == 8));
    assert!(list.iter().all(|s| s.time.timestamp() > 1_700_000_000));
    assert!(list.iter().any(|s| s.paths == ["/scratch/src"]));
    assert!(list.iter().any(|s| s.tags == ["t1"]));
    assert_eq!(run.lines(), ["4 snapshots"]);

    let run = replay(
        &Command::Snapshots { host: None },
        V14,
        "v0.14/snapshots_other_host",
        0,
    );
    assert_eq!(run.finished.output.as_deref(), Some("[]"));

    let v17 = ResticVersion::new(0, 17, 0);
    let run = replay(
        &Command::Snapshots { host: None },
        v17,
        "newer/v0.17_snapshots",
        0,
    );
    let list = parse_snapshots(run.finished.output.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list[1].short_id, "00112233");
    assert_eq!(
        list[1].summary.as_ref().map(|s| s.data_added_packed),
        Some(1024)
    );
    assert_eq!(list[1].program_version.as_deref(), Some("restic 0.17.0"));
    assert_eq!(
        (list[1].size_bytes(), list[1].file_count()),
        (Some(9999), Some(6))
    );
    assert_eq!(
        list[0].time.to_rfc3339(),
        "2024-08-01T08:00:00.123456789+00:00"
    );
}

#[test]
fn stats_documents() {
    let restore_size = Command::Stats {
        mode: StatsMode::RestoreSize,
    };
    let run = replay(&restore_size, V14, "v0.14/stats_restore_size", 0);
    let stats = parse_stats(run.finished.output.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.total_size > 1 << 30);
    assert_eq!(stats.snapshots_count, 4);
    assert_eq!(
        run.finished.stats["total_file_count"],
        json!(stats.total_file_count)
    );

    let raw = Command::Stats {
        mode: StatsMode::RawData,
    };
    let run = replay(&raw, V14, "v0.14/stats_raw_data", 0);
    let stats = parse_stats(run.finished.output.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.total_blob_count > 0);
    assert_eq!(stats.compression_ratio, None);

    let run = replay(
        &raw,
        ResticVersion::new(0, 15, 0),
        "newer/v0.15_stats_raw_data",
        0,
    );
    assert_eq!(
        run.finished.stats["compression_ratio"],
        json!(2.5459673331776034)
    );

    let run = replay(
        &raw,
        ResticVersion::new(0, 19, 0),
        "newer/v0.19.0_stats_leak",
        0,
    );
    let stats = parse_stats(run.finished.output.as_deref().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.total_blob_count, 18);
    assert_eq!(run.lines()[0], "[0:00] 100.00%  1 / 1 snapshots");
}

#[test]
fn ls_lines() {
    let run = replay(&ls(), V14, "v0.14/ls_dir", 0);
    let listing = parse_ls(run.finished.output.as_deref().unwrap_or_default());
    assert!(listing.snapshot.is_some());
    let paths: Vec<&str> = listing.nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["/src/a", "/src/a/b", "/src/a/one.txt"]);
    assert!(run.lines().is_empty(), "ls output is data, not log");

    let run = replay(&ls(), ResticVersion::new(0, 17, 0), "newer/v0.17_ls", 0);
    let listing = parse_ls(run.finished.output.as_deref().unwrap_or_default());
    assert_eq!(listing.nodes.len(), 3);
    assert_eq!(listing.nodes[2].inode, Some(1236));
    assert_eq!(listing.nodes[2].mtime, "2026-11-27T01:36:50Z".parse().ok());

    // 0.14 exits 0 for an unknown id; report it like 0.15+ does.
    let run = replay(&ls(), V14, "v0.14/ls_unknown_id", 0);
    let f = &run.finished;
    assert_eq!(
        (f.status, f.kind),
        (Status::Failed, Some(FailureKind::SnapshotNotFound))
    );
    assert!(f
        .error
        .clone()
        .unwrap_or_default()
        .contains("no matching ID found"));
}

#[test]
fn forget_counts() {
    let command = Command::Forget {
        policy: RetentionPolicy::keep_last(1),
        host: None,
    };
    let run = replay(&command, V14, "v0.14/forget", 0);
    assert_eq!(run.finished.stats, json!({"removed": 2, "kept": 2}));
    assert_eq!(run.lines(), ["forget kept 2 snapshots and removed 2"]);
    let run = replay(
        &command,
        ResticVersion::new(0, 17, 0),
        "newer/v0.17_forget",
        0,
    );
    assert_eq!(run.finished.stats, json!({"removed": 1, "kept": 1}));
}

#[test]
fn check_verdicts() {
    let check = Command::Check {
        read_data_subset: None,
    };
    let run = replay(&check, V14, "v0.14/check", 0);
    assert_eq!(run.finished.status, Status::Succeeded);
    assert_eq!(run.finished.stats, json!({"errors": false}));
    assert!(run.lines().contains(&"no errors were found"));

    let run = replay(&check, V14, "v0.14/check_corrupt", 1);
    let f = &run.finished;
    assert_eq!(f.status, Status::Failed);
    assert_eq!(f.stats, json!({"errors": true}));
    assert!(f
        .error
        .clone()
        .unwrap_or_default()
        .contains("repository contains errors"));
    assert!(run
        .lines()
        .iter()
        .any(|l| l.starts_with("Pack ID does not match")));

    let v18 = ResticVersion::new(0, 18, 0);
    let run = replay(&check, v18, "newer/v0.18_check_clean", 0);
    assert_eq!(run.finished.stats["errors"], json!(false));
    assert_eq!(run.finished.stats["num_errors"], json!(0));
    assert_eq!(run.lines(), ["check found no errors"]);
    let run = replay(&check, v18, "newer/v0.18_check_errors", 1);
    assert_eq!(run.finished.stats["errors"], json!(true));
    assert_eq!(
        run.finished.error.as_deref(),
        Some("Fatal: repository contains errors")
    );
    assert!(run
        .lines()
        .contains(&"error: Pack ID does not match, want 93b25d37, got e6c9dba3"));
}

#[test]
fn restore_text_and_json() {
    let restore = Command::Restore {
        snapshot_id: "deadbeef".into(),
        include: vec![],
        target: "/tmp/r".into(),
        verify: false,
    };
    let run = replay(&restore, V14, "v0.14/restore", 0);
    assert_eq!(run.finished.status, Status::Succeeded);
    assert_eq!(run.finished.stats, json!({}));
    assert!(run.lines()[0].starts_with("restoring <Snapshot "));

    let run = replay(
        &restore,
        ResticVersion::new(0, 16, 0),
        "newer/v0.16_restore",
        0,
    );
    assert_eq!(run.progress()[0].percent, 50.0);
    assert_eq!(run.finished.stats["files_restored"], json!(4));
    assert_eq!(
        run.lines(),
        ["restored 4 of 4 files (3.8 MiB of 3.8 MiB) in 2.0s"]
    );
}

#[test]
fn text_commands_and_cat_config() {
    let run = replay(&Command::Init, V14, "v0.14/init", 0);
    assert_eq!(run.finished.status, Status::Succeeded);
    assert!(run.lines()[0].starts_with("created restic repository "));
    assert_eq!(run.finished.output, None);

    let run = replay(&Command::CatConfig, V14, "v0.14/cat_config", 0);
    let config: serde_json::Value =
        serde_json::from_str(run.finished.output.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config["version"], json!(2));
    assert!(
        run.lines()[0].starts_with("repository ") && run.lines()[0].ends_with("(format version 2)")
    );

    let run = replay(&Command::ListLocks, V14, "v0.14/list_locks", 0);
    assert_eq!(run.finished.output.as_ref().map(String::len), Some(64));
    let run = replay(&Command::ListLocks, V14, "v0.14/list_locks_none", 0);
    assert_eq!(run.finished.output.as_deref(), Some(""));

    let run = replay(&Command::Prune, V14, "v0.14/prune", 0);
    assert!(run.lines().contains(&"done"));
    let run = replay(&Command::Unlock, V14, "v0.14/unlock", 0);
    assert_eq!(run.lines(), ["successfully removed locks"]);
}

#[test]
fn long_lines_are_truncated_for_the_log() {
    let mut collector = Collector::new(&Command::Prune, V14);
    let events = collector.on_line(
        Stream::Stdout,
        RawLine {
            bytes: vec![b'x'; 70_000],
            dropped: 5,
        },
    );
    let [Event::Line { text, .. }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert!(text.ends_with(&format!("… [truncated {} bytes]", 70_000 - 64 * 1024 + 5)));
}

/// Found by `prop_parsers`: an `exit_error` message became the run's error
/// text whole, so an 80 KB message made an 80 KB `job.finished` error.
#[test]
fn a_huge_exit_error_is_cut_to_the_error_bound() {
    let message = "é".repeat(40_000);
    let stderr = format!(r#"{{"message_type":"exit_error","code":1,"message":"{message}"}}"#);
    let (events, finished) = super::replay(
        &Command::Init,
        ResticVersion::new(0, 18, 0),
        b"",
        stderr.as_bytes(),
        Some(1),
    );
    let error = finished.error.unwrap_or_default();
    assert!(
        error.len() <= MAX_ERROR_BYTES + '…'.len_utf8(),
        "{}",
        error.len()
    );
    assert!(error.starts_with("éé") && error.ends_with('…'));
    // The log keeps what a log line may hold.
    let [Event::Line { text, .. }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert!(text.ends_with("bytes]"));
}

#[test]
fn a_recursive_listing_streams_its_nodes_as_events() {
    let tree = Command::LsTree {
        snapshot_id: "deadbeef".into(),
        dirs: vec![],
    };
    let stdout = r#"{"time":"2026-11-27T01:36:55Z","tree":"t","paths":["/src"],"id":"f5c8b0c8aa","short_id":"f5c8b0c8","struct_type":"snapshot"}
{"name":"src","type":"dir","path":"/src","mode":2147484141,"struct_type":"node"}
{"name":".ssh","type":"dir","path":"/src/.ssh","mode":2147484141,"struct_type":"node"}
{"name":"authorized_keys","type":"file","path":"/src/.ssh/authorized_keys","size":3,"mode":384,"struct_type":"node"}
"#;
    let (events, finished) = super::replay(&tree, V14, stdout.as_bytes(), b"", Some(0));
    assert_eq!(finished.status, Status::Succeeded);
    assert_eq!(finished.output, None, "nothing is collected");
    let paths: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Node(node) => Some(node.path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(paths, ["/src", "/src/.ssh", "/src/.ssh/authorized_keys"]);
    // 0.14 exits 0 for an unknown snapshot; that is a failure here too.
    let (_, missing) = super::replay(
        &tree,
        V14,
        b"",
        b"Ignoring \"deadbeef\": no matching ID found for prefix \"deadbeef\"\n",
        Some(0),
    );
    assert_eq!(missing.status, Status::Failed);
}

/// The version a recorded folder was made with, from its own `version`.
fn recorded_version(folder: &str) -> ResticVersion {
    let text = fixture(&format!("{folder}/version.stdout")).unwrap_or_default();
    crate::version::parse_version_output(&text).unwrap_or_else(|e| panic!("{folder}: {e}"))
}

/// Real output of Debian trixie's 0.18 and sid's 0.19 (recorded by
/// `tests/fixtures/record.sh`), through the same cases as 0.14.
#[test]
fn recorded_output_of_0_18_and_0_19() {
    let check = Command::Check {
        read_data_subset: None,
    };
    for folder in ["v0.18", "v0.19"] {
        let version = recorded_version(folder);
        let case = |name: &str| format!("{folder}/{name}");
        let run_of = |command: &Command, name: &str| replay(command, version, &case(name), 0);

        // version --json is one object; both forms give the same version.
        let json = fixture(&case("version_json.stdout")).unwrap_or_default();
        assert!(json.starts_with("{\"message_type\":\"version\""), "{json}");
        assert_eq!(
            crate::version::parse_version_output(&json).ok(),
            Some(version)
        );

        let run = run_of(&Command::Init, "init");
        assert!(
            run.lines()[0].starts_with("created restic repository "),
            "{folder}"
        );
        let run = run_of(&Command::Init, "init_exists");
        assert_eq!(
            run.finished.kind,
            Some(FailureKind::AlreadyInitialized),
            "{folder}"
        );

        // Backups: the full id, 0.18's start/end times, ticker progress.
        let run = run_of(&backup(), "backup");
        let f = &run.finished;
        assert_eq!(f.status, Status::Succeeded, "{folder}");
        assert_eq!(
            f.snapshot_id.as_ref().map(String::len),
            Some(64),
            "{folder}"
        );
        assert!(f.stats["backup_start"].is_string(), "{folder}: {}", f.stats);
        assert_eq!(f.stats["files_new"], json!(4), "{folder}");
        let run = run_of(&backup(), "backup_progress");
        assert!(run.progress().len() >= 2, "{folder}");
        assert!(run.progress().iter().all(|p| p.bytes_total == 1 << 30));

        // A missing top-level path: rc 0 on 0.18, rc 3 on 0.19; partial on both,
        // naming the path.
        let run = run_of(&backup(), "backup_missing_path");
        let f = &run.finished;
        assert_eq!(f.status, Status::Partial, "{folder}");
        assert!(f.snapshot_id.is_some(), "{folder}");
        let error = f.error.clone().unwrap_or_default();
        assert!(
            error.starts_with("src/doesnotexist does not exist, skipping"),
            "{folder}: {error}"
        );
        let run = run_of(&backup(), "backup_all_missing");
        let f = &run.finished;
        assert_eq!(
            (f.status, f.kind),
            (Status::Failed, Some(FailureKind::SourceNotFound)),
            "{folder}"
        );
        assert_eq!(
            f.error.as_deref(),
            Some("Fatal: all source directories/files do not exist")
        );

        // Exit codes 10, 11, 12, with restic's exit_error message as the error.
        for (name, kind, words) in [
            ("wrong_password", FailureKind::WrongPassword, "Fatal: wrong password or no key found"),
            ("no_repository", FailureKind::NoRepository, "Fatal: repository does not exist: unable to open config file: stat /scratch/nonexistent/config"),
            ("rest_no_repository", FailureKind::NoRepository, "Fatal: repository does not exist: unable to open config file: <config/> does not exist"),
            ("locked", FailureKind::Locked, "unable to create lock in backend: repository is already locked by PID"),
        ] {
            let run = run_of(&check, name);
            let f = &run.finished;
            assert_eq!((f.status, f.kind), (Status::Failed, Some(kind)), "{folder}/{name}");
            let error = f.error.clone().unwrap_or_default();
            assert!(error.starts_with(words), "{folder}/{name}: {error}");
            assert!(!error.contains("message_type"), "{folder}/{name}: {error}");
        }
        // A check that could not lock says nothing about the repository,
        // although restic's summary counts one error.
        assert_eq!(
            run_of(&check, "locked").finished.stats,
            json!({}),
            "{folder}"
        );

        // 15-minute backend retries: stopped by our limit, still recognised.
        let run = run_of(&Command::CatConfig, "rest_unreachable");
        assert_eq!(
            run.finished.kind,
            Some(FailureKind::Unreachable),
            "{folder}"
        );

        // SIGINT: 0.18 exits 1, 0.19 130 — a failure either way when
        // someone else sent it, with restic's words.
        let run = run_of(&backup(), "sigint");
        assert_eq!(run.finished.status, Status::Failed, "{folder}");
        assert_eq!(
            run.finished.error.as_deref(),
            Some("Fatal: unable to save snapshot: context canceled"),
            "{folder}"
        );
        assert!(
            run.lines()
                .contains(&"signal interrupt received, cleaning up"),
            "{folder}"
        );

        // Single documents.
        let run = run_of(&Command::Snapshots { host: None }, "snapshots");
        let snapshots = parse_snapshots(run.finished.output.as_deref().unwrap_or_default());
        assert_eq!(snapshots.map(|s| s.len()).ok(), Some(4), "{folder}");
        for (mode, name) in [
            (StatsMode::RestoreSize, "stats_restore_size"),
            (StatsMode::RawData, "stats_raw_data"),
        ] {
            let run = run_of(&Command::Stats { mode }, name);
            let stats = parse_stats(run.finished.output.as_deref().unwrap_or_default());
            assert!(stats.is_ok_and(|s| s.total_size > 0), "{folder}/{name}");
        }
        let forget = Command::Forget {
            policy: RetentionPolicy::keep_last(1),
            host: None,
        };
        let run = run_of(&forget, "forget");
        assert!(
            run.finished.stats["removed"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{folder}"
        );
        let run = run_of(&Command::CatConfig, "cat_config");
        assert!(run.lines()[0].ends_with("(format version 2)"), "{folder}");

        // ls with message_type, and an unknown id (rc 1 since 0.15).
        let run = run_of(&ls(), "ls_dir");
        let listing = parse_ls(run.finished.output.as_deref().unwrap_or_default());
        assert!(
            listing.snapshot.is_some() && listing.nodes.len() >= 3,
            "{folder}"
        );
        let run = run_of(&ls(), "ls_unknown_id");
        assert_eq!(
            run.finished.kind,
            Some(FailureKind::SnapshotNotFound),
            "{folder}"
        );

        // check --json: a summary on stdout, error lines and exit_error on stderr.
        let run = run_of(&check, "check");
        assert_eq!(run.finished.stats["errors"], json!(false), "{folder}");
        assert_eq!(run.lines(), ["check found no errors"], "{folder}");
        let run = run_of(&check, "check_corrupt");
        let f = &run.finished;
        assert_eq!(
            (f.status, f.stats["errors"].clone()),
            (Status::Failed, json!(true)),
            "{folder}"
        );
        assert_eq!(
            f.stats["broken_packs"].as_array().map(Vec::len),
            Some(1),
            "{folder}"
        );
        assert_eq!(
            f.error.as_deref(),
            Some("Fatal: repository contains errors"),
            "{folder}"
        );

        // restore --json: the summary becomes the job's stats.
        let restore = Command::Restore {
            snapshot_id: "deadbeef".into(),
            include: vec![],
            target: "/tmp/r".into(),
            verify: false,
        };
        let run = run_of(&restore, "restore");
        assert_eq!(
            run.finished.stats["bytes_restored"],
            json!(3_000_004),
            "{folder}"
        );
        assert!(
            run.lines()[0].starts_with("restored 5 of 3 files"),
            "{folder}"
        );

        // Locks and unlock (silent when nothing was removed, since 0.15).
        let run = run_of(&Command::ListLocks, "list_locks");
        assert_eq!(
            run.finished.output.as_ref().map(String::len),
            Some(64),
            "{folder}"
        );
        let run = run_of(&Command::Unlock, "unlock");
        assert_eq!(
            (run.finished.status, run.lines().len()),
            (Status::Succeeded, 0),
            "{folder}"
        );
        assert_eq!(
            run_of(&Command::Prune, "prune").finished.status,
            Status::Succeeded
        );
    }
}

#[test]
fn copy_counts_the_snapshots_it_saved_on_every_release() {
    let copy = Command::Copy {
        from: crate::Repository::new("/data/primary", "pw"),
        host: Some("vm".into()),
        tags: vec![],
        snapshot_ids: vec![],
    };
    let init_from = Command::InitFrom {
        from: crate::Repository::new("/data/primary", "pw"),
    };
    for (folder, version) in [
        ("v0.14", V14),
        ("v0.18", ResticVersion::new(0, 18, 0)),
        ("v0.19", ResticVersion::new(0, 19, 1)),
    ] {
        let run = replay(&copy, version, &format!("{folder}/copy"), 0);
        assert_eq!(run.finished.status, Status::Succeeded, "{folder}");
        assert_eq!(
            run.finished.stats,
            json!({"snapshots_copied": 2}),
            "{folder}"
        );
        assert!(
            run.lines().iter().any(|l| l.starts_with("snapshot ")),
            "{folder}: {:?}",
            run.lines()
        );
        // Everything there already: restic copies nothing (0.14 says it
        // skipped each; 0.18+ say so only with -v).
        let again = replay(&copy, version, &format!("{folder}/copy_again"), 0);
        assert_eq!(
            (again.finished.status, again.finished.stats.clone()),
            (Status::Succeeded, json!({"snapshots_copied": 0})),
            "{folder}"
        );
        let init = replay(&init_from, version, &format!("{folder}/init_from"), 0);
        assert_eq!(init.finished.status, Status::Succeeded, "{folder}");
        assert!(
            init.lines()[0].starts_with("created restic repository"),
            "{folder}: {:?}",
            init.lines()
        );
    }
    assert!(copy_saved("snapshot 11c48ef2 saved"));
    assert!(copy_saved(
        "snapshot f062206e saved, copied from source snapshot 6386133d"
    ));
    assert!(!copy_saved(
        "snapshot 6386133d of [/src] at 2026-12-06 by root@vm"
    ));
    assert!(!copy_saved(
        "skipping source snapshot 6386133d, was already copied"
    ));
    assert!(!copy_saved("snapshot saved"));
}
