//! The agent trusts nothing a server sends: a hand-played server on a real
//! socket sends the real agent frames whose ids are paths (`../../x`, an
//! absolute path), NULs or megabytes long. Each is refused with a reply
//! naming the field, and nothing is created or changed outside the state
//! directory — nor inside it, beyond what the agent writes for itself.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::SinkExt;
use rm_agent::{run, RunOptions};
use rm_protocol::{
    AgentSettings, CommandCancel, CommandRun, ConfigUpdate, Frame, JobAck, JobKind, Message,
    RejectReason, RepositoryConfig, Schedule, ScheduleSet, TreeList,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use support::{accept, listener, next_non_heartbeat, within, ServerWs};

/// Every file and folder below `root` with its contents (files) or `None`
/// (folders), leaving out `skip`.
fn tree(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
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

async fn send(ws: &mut ServerWs, frame: Frame) {
    ws.send(WsMessage::text(frame.encode()))
        .await
        .unwrap_or_else(|e| panic!("sending to the agent: {e}"));
}

fn bad_request(frame: &Frame, field: &str) {
    match &frame.message {
        Message::Error(error) => assert!(
            error.message.contains(field),
            "expected `{field}` named in {error:?}"
        ),
        other => panic!("expected an error naming {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_with_hostile_ids_are_refused_and_write_nothing_outside_the_state_dir() {
    let outer = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = outer.path().join("a/b/state");
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(outer.path().join("a/b/x.jsonl"), "an operator's file")
        .unwrap_or_else(|e| panic!("{e}"));
    let (listener, url) = listener().await;
    support::write_enrolment(&state, &url);
    let before = tree(outer.path(), &state);

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run(
        RunOptions::new(&state, "/usr/bin/restic"),
        shutdown.clone(),
    ));
    let (_, ws) = accept(&listener, None).await;
    let mut ws = ws.unwrap_or_else(|| panic!("upgrade failed"));
    assert_eq!(next_non_heartbeat(&mut ws).await.message.kind(), "hello");
    send(
        &mut ws,
        Frame::new(ConfigUpdate {
            repository: Some(RepositoryConfig {
                url: outer.path().join("repo").display().to_string(),
                password: "pw".into(),
                env: Default::default(),
                copy_to: None,
            }),
            settings: AgentSettings {
                heartbeat_seconds: 30,
            },
        }),
    )
    .await;

    let absolute = outer.path().join("absolute").display().to_string();
    let hostile = [
        "../x".to_owned(),
        "../../x".to_owned(),
        "../../../../../../../../tmp/rm-hostile-x".to_owned(),
        absolute.clone(),
        "01J0000000000000000000000\0".to_owned(),
        "x".repeat(1 << 20),
        String::new(),
    ];
    for id in &hostile {
        send(
            &mut ws,
            Frame::new(CommandRun {
                job_id: id.clone(),
                kind: JobKind::Backup,
                params: serde_json::json!({"paths": [outer.path().display().to_string()]}),
                repository: None,
            }),
        )
        .await;
        match next_non_heartbeat(&mut ws).await.message {
            Message::CommandResult(result) => {
                assert!(!result.accepted);
                assert_eq!(result.reason, Some(RejectReason::BadParams));
                let message = result.message.unwrap_or_default();
                assert!(message.contains("`job_id` must be a job id"), "{message}");
            }
            other => panic!("expected command.result, got {other:?}"),
        }
        send(
            &mut ws,
            Frame::new(JobAck {
                job_id: id.clone(),
                done: true,
                ..JobAck::default()
            }),
        )
        .await;
        bad_request(&next_non_heartbeat(&mut ws).await, "`job_id` of `job.ack`");
        send(&mut ws, Frame::new(CommandCancel { job_id: id.clone() })).await;
        bad_request(
            &next_non_heartbeat(&mut ws).await,
            "`job_id` of `command.cancel`",
        );
        send(
            &mut ws,
            Frame::with_id(
                id.clone(),
                TreeList {
                    snapshot_id: "abcd1234".into(),
                    path: "/".into(),
                },
            ),
        )
        .await;
        bad_request(&next_non_heartbeat(&mut ws).await, "`id` of `tree.list`");
        send(
            &mut ws,
            Frame::with_id(
                "01J0000000000000000000000R",
                TreeList {
                    snapshot_id: id.clone(),
                    path: "/".into(),
                },
            ),
        )
        .await;
        let reply = next_non_heartbeat(&mut ws).await;
        assert_eq!(reply.id.as_deref(), Some("01J0000000000000000000000R"));
        bad_request(&reply, "`snapshot_id`");
        send(
            &mut ws,
            Frame::new(ScheduleSet {
                version: 3,
                schedules: vec![Schedule {
                    id: id.clone(),
                    kind: JobKind::Backup,
                    cron: "* * * * *".into(),
                    timezone: None,
                    params: serde_json::json!({"paths": ["/srv"]}),
                    enabled: true,
                    jitter_seconds: 0,
                }],
            }),
        )
        .await;
        bad_request(&next_non_heartbeat(&mut ws).await, "`schedules[0].id`");
    }

    shutdown.cancel();
    drop(ws);
    within(20.0, "the agent to stop", agent)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));

    // Nothing outside the state directory changed…
    assert_eq!(tree(outer.path(), &state), before);
    assert!(!Path::new("/tmp/rm-hostile-x.jsonl").exists());
    assert!(!Path::new(&format!("{absolute}.jsonl")).exists());
    // …and inside it, no spool file and no schedule set came of it.
    let spool: Vec<_> = std::fs::read_dir(state.join("spool"))
        .unwrap_or_else(|e| panic!("{e}"))
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
    assert!(!state.join("schedules.json").exists());
}
