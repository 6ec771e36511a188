//! Property test: whatever the server sends — `command.run`, `schedule.set`,
//! `config.update`, `job.ack`, `command.cancel`, `tree.list`,
//! `token.rotate`, with ids that are paths, NULs, long strings or real
//! ULIDs — the agent's real frame handler creates and changes nothing
//! outside its state directory, and inside it names spool files only
//! `<ULID>.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use rm_protocol::{
    AgentSettings, CommandCancel, CommandRun, ConfigUpdate, Frame, JobAck, JobKind,
    RepositoryConfig, Schedule, ScheduleSet, TokenRotate, TreeList,
};

use crate::handler::Handler;
use crate::jobs::JobRunner;
use crate::restore_guard::RestoreGuard;
use crate::spool::Spool;
use crate::state::StateDir;

/// Where the hostile absolute ids point: inside the watched folder, so a
/// write there is seen (and nothing lands in the real `/tmp`).
const OUTER: &str = "@OUTER@";

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("../x".to_owned()),
        Just("../../x".to_owned()),
        Just("../../../y".to_owned()),
        Just(format!("{OUTER}/abs")),
        Just("01J0000000000000000000000\0".to_owned()),
        Just("x".repeat(5000)),
        Just(String::new()),
        "[./a-z0-9]{0,12}",
        any::<String>(),
        // Real ULIDs, so accepted jobs and sets are exercised too.
        Just("01J0000000000000000000000A".to_owned()),
        Just("01J0000000000000000000000B".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just(format!("{OUTER}/restore")),
        Just(format!("{OUTER}/a/../..")),
        Just("../../x".to_owned()),
        Just("/root/.ssh".to_owned()),
        "/[a-z.]{1,8}(/[a-z.]{1,8}){0,2}",
        any::<String>(),
    ]
}

fn kind() -> impl Strategy<Value = JobKind> {
    proptest::sample::select(JobKind::ALL.to_vec())
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (id(), kind(), path(), path(), id()).prop_map(|(job_id, kind, a, b, snapshot)| {
            let params = match kind {
                JobKind::Restore => serde_json::json!({
                    "snapshot_id": snapshot, "target": a, "include": [b]
                }),
                JobKind::Backup => serde_json::json!({"paths": [a, b]}),
                _ => serde_json::Value::Null,
            };
            Frame::new(CommandRun {
                job_id,
                kind,
                params,
                repository: None,
            })
        }),
        (id(), any::<u64>(), kind(), path()).prop_map(|(id, version, kind, p)| {
            Frame::new(ScheduleSet {
                version,
                schedules: vec![Schedule {
                    id,
                    kind,
                    cron: "@daily".into(),
                    timezone: None,
                    params: serde_json::json!({"paths": [p]}),
                    enabled: true,
                    jitter_seconds: 0,
                }],
            })
        }),
        (path(), 0u32..100).prop_map(|(url, heartbeat_seconds)| {
            Frame::new(ConfigUpdate {
                repository: Some(RepositoryConfig {
                    url,
                    password: "pw".into(),
                    env: Default::default(),
                    copy_to: None,
                }),
                settings: AgentSettings { heartbeat_seconds },
            })
        }),
        (id(), any::<bool>()).prop_map(|(job_id, done)| Frame::new(JobAck {
            job_id,
            done,
            ..JobAck::default()
        })),
        id().prop_map(|job_id| Frame::new(CommandCancel { job_id })),
        (id(), id(), path()).prop_map(|(rpc, snapshot_id, path)| Frame::with_id(
            rpc,
            TreeList { snapshot_id, path }
        )),
        id().prop_map(|token| Frame::new(TokenRotate { token })),
    ]
}

/// Puts the test folder's real path where a strategy wrote [`OUTER`].
fn placed(frame: &Frame, outer: &Path) -> Frame {
    let text = frame.encode().replace(OUTER, &outer.display().to_string());
    Frame::decode(&text).unwrap_or_else(|_| frame.clone())
}

/// Every file and folder below `root` (contents for files), but `skip`.
fn tree(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            if path == skip {
                continue;
            }
            if path.is_dir() {
                out.insert(path.clone(), None);
                todo.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).ok());
            }
        }
    }
    out
}

fn handle_all(frames: &[Frame]) -> Result<(), TestCaseError> {
    let outer = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let state = outer.path().join("a/b/state");
    std::fs::create_dir_all(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(outer.path().join("a/b/x.jsonl"), "someone's file")
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let before = tree(outer.path(), &state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    runtime.block_on(async {
        let (outbox, _answers) = tokio::sync::mpsc::channel(1024);
        let spool = Spool::open(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let jobs = JobRunner::new(
            // No restic: accepted jobs end at once, before any restic runs.
            outer.path().join("no-restic"),
            state.join("cache"),
            None,
            outbox,
            spool,
        );
        jobs.guard_restores(RestoreGuard::new(&state, false));
        let mut handler = Handler::new(
            StateDir::new(&state),
            Duration::from_secs(30),
            None,
            jobs.clone(),
            tokio::sync::watch::channel(ScheduleSet::default()).0,
        );
        for frame in frames {
            handler.handle(placed(frame, outer.path())).await;
        }
        for _ in 0..200 {
            if !jobs.busy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<(), TestCaseError>(())
    })?;
    prop_assert_eq!(tree(outer.path(), &state), before);
    if let Ok(spool) = std::fs::read_dir(state.join("spool")) {
        for entry in spool.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".jsonl").unwrap_or("");
            prop_assert!(id.parse::<rm_core::JobId>().is_ok(), "spool file {name:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_frame_writes_outside_the_state_dir(frames in proptest::collection::vec(frame(), 1..8)) {
        handle_all(&frames)?;
    }
}
