//! What the server sends, parsed before anything acts on it. The agent runs
//! as root and trusts nothing in a frame: every id (job, schedule, RPC
//! request, snapshot) becomes its type here — a ULID or a hex snapshot id,
//! so never a path, a flag or a control character — and the rest of the
//! agent takes only those types. A frame whose id does not parse is
//! answered like any other bad input (a `command.result` rejection with
//! `bad_params`, or an `error` with `bad_request`), naming the field, and
//! changes nothing.

use std::str::FromStr;

use rm_core::{JobId, RequestId, ScheduleId, SnapshotId};
use rm_protocol::{
    AgentUpgrade, CommandResult, ConfigUpdate, ErrorBody, ErrorCode, Frame, JobAck, JobKind,
    Message, RejectReason, RepositoryConfig, ScheduleSet, TokenRotate,
};
use serde_json::Value;

/// Longest piece of a refused value quoted back in a reply or a log line.
const SHOWN_CHARS: usize = 80;

/// A `command.run` (or an offline run of a schedule) with its id parsed.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// The job's id.
    pub(crate) job_id: JobId,
    /// What to run.
    pub(crate) kind: JobKind,
    /// The job's parameters, checked when the job starts.
    pub(crate) params: Value,
    /// A repository for this job only (a restore from another host's).
    pub(crate) repository: Option<RepositoryConfig>,
}

/// A server message, its ids parsed.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// `config.update` (no ids).
    Config(ConfigUpdate),
    /// `schedule.set`, every schedule id a [`ScheduleId`].
    Schedules(ScheduleSet),
    /// `command.run`.
    Run(Run),
    /// `command.cancel`.
    Cancel(JobId),
    /// `job.ack` about a job.
    Ack(JobId, JobAck),
    /// `tree.list`: an RPC request.
    TreeList {
        /// The request id, for the reply.
        id: RequestId,
        /// The snapshot to look into.
        snapshot_id: SnapshotId,
        /// An absolute path inside it.
        path: String,
    },
    /// `download.start`.
    Download(crate::download::Request),
    /// `token.rotate` (the token is checked where it is used).
    TokenRotate(TokenRotate),
    /// `agent.upgrade` (checked by the upgrader before anything is fetched).
    Upgrade(AgentUpgrade),
    /// `error`: the server's complaint, logged.
    Error(ErrorBody),
    /// A kind this agent does not know, or one the server should not send.
    Ignored(String),
}

/// A value quoted for a message: bounded and escaped, since it may be
/// hostile (megabytes, NULs, terminal escapes).
pub(crate) fn shown(value: &str) -> String {
    let mut out = format!("{:?}", value.chars().take(SHOWN_CHARS).collect::<String>());
    if value.chars().count() > SHOWN_CHARS {
        out.push('…');
    }
    out
}

/// A ULID id of type `T`, or the problem with `value`.
fn ulid<T: FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("must be {what} (a 26-character ULID), got {}", shown(value)))
}

fn bad_request(id: Option<String>, message: String) -> Box<Frame> {
    tracing::warn!("refusing a frame from the server: {message}");
    Box::new(Frame {
        id,
        message: ErrorBody::new(ErrorCode::BadRequest, message).into(),
    })
}

/// The reply to a refused frame, if it gets one.
pub(crate) type Refusal = Option<Box<Frame>>;

/// Parses a frame's ids. `Err` carries the reply for a frame that is
/// refused (none when the server expects no answer and needs none).
pub(crate) fn parse(frame: Frame) -> Result<Inbound, Refusal> {
    match frame.message {
        Message::ConfigUpdate(config) => Ok(Inbound::Config(config)),
        Message::ScheduleSet(set) => {
            for (i, schedule) in set.schedules.iter().enumerate() {
                if let Err(problem) = ulid::<ScheduleId>(&schedule.id, "a schedule id") {
                    return Err(Some(bad_request(
                        None,
                        format!(
                            "`schedules[{i}].id` {problem}; schedule set version {} was not applied",
                            set.version
                        ),
                    )));
                }
            }
            Ok(Inbound::Schedules(set))
        }
        Message::CommandRun(run) => match ulid::<JobId>(&run.job_id, "a job id") {
            Ok(job_id) => Ok(Inbound::Run(Run {
                job_id,
                kind: run.kind,
                params: run.params,
                repository: run.repository,
            })),
            Err(problem) => {
                let message = format!("`job_id` {problem}");
                tracing::warn!("refusing a job: {message}");
                Err(Some(Box::new(Frame::new(CommandResult {
                    job_id: run.job_id.chars().take(SHOWN_CHARS).collect(),
                    accepted: false,
                    reason: Some(RejectReason::BadParams),
                    message: Some(message),
                }))))
            }
        },
        Message::CommandCancel(cancel) => ulid(&cancel.job_id, "a job id")
            .map(Inbound::Cancel)
            .map_err(|problem| {
                Some(bad_request(
                    None,
                    format!("`job_id` of `command.cancel` {problem}"),
                ))
            }),
        Message::JobAck(ack) => match ulid(&ack.job_id, "a job id") {
            Ok(job_id) => Ok(Inbound::Ack(job_id, ack)),
            Err(problem) => Err(Some(bad_request(
                None,
                format!("`job_id` of `job.ack` {problem}"),
            ))),
        },
        Message::TreeList(request) => {
            let raw_id = frame.id.unwrap_or_default();
            let id: RequestId = ulid(&raw_id, "a request id").map_err(|problem| {
                Some(bad_request(None, format!("`id` of `tree.list` {problem}")))
            })?;
            let reply_to = Some(id.to_string());
            let snapshot_id: SnapshotId = request
                .snapshot_id
                .parse()
                .map_err(|e| Some(bad_request(reply_to.clone(), format!("`snapshot_id`: {e}"))))?;
            rm_protocol::params::absolute_path(&request.path).map_err(|problem| {
                Some(bad_request(
                    reply_to.clone(),
                    format!("`path` {}", problem.replace(&request.path, "…")),
                ))
            })?;
            Ok(Inbound::TreeList {
                id,
                snapshot_id,
                path: request.path,
            })
        }
        Message::DownloadStart(start) => {
            let refuse =
                |problem: String| Some(bad_request(None, format!("`download.start`: {problem}")));
            let id = ulid(&start.download_id, "a download id")
                .map_err(|problem| refuse(format!("`download_id` {problem}")))?;
            let snapshot_id: SnapshotId = start
                .snapshot_id
                .parse()
                .map_err(|e| refuse(format!("`snapshot_id`: {e}")))?;
            rm_protocol::params::absolute_path(&start.path).map_err(|problem| {
                refuse(format!("`path` {}", problem.replace(&start.path, "…")))
            })?;
            Ok(Inbound::Download(crate::download::Request {
                id,
                snapshot_id,
                path: start.path,
                format: start.format,
                upload_url: start.upload_url,
            }))
        }
        Message::TokenRotate(rotate) => Ok(Inbound::TokenRotate(rotate)),
        Message::AgentUpgrade(upgrade) => Ok(Inbound::Upgrade(upgrade)),
        Message::Error(error) => Ok(Inbound::Error(error)),
        other => Ok(Inbound::Ignored(other.kind().to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_protocol::{CommandCancel, CommandRun, Schedule, TreeList};

    const JOB: &str = "01J0000000000000000000000A";
    const RPC: &str = "01J0000000000000000000000R";

    fn refused(frame: Frame) -> Frame {
        match parse(frame) {
            Err(Some(reply)) => *reply,
            other => panic!("expected a refusal with a reply, got {other:?}"),
        }
    }

    fn error_text(reply: &Frame) -> String {
        match &reply.message {
            Message::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest);
                e.message.clone()
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const HOSTILE: &[&str] = &[
        "",
        "../../etc/x",
        "/etc/cron.d/x",
        "01JOB",
        "01J0000000000000000000000\0",
        "01J000000000000000000000/A",
        "-r",
    ];

    #[test]
    fn a_run_with_a_bad_job_id_is_refused_naming_the_field() {
        for bad in HOSTILE.iter().copied().chain([&*"x".repeat(1 << 20)]) {
            let reply = refused(Frame::new(CommandRun {
                job_id: bad.into(),
                kind: JobKind::Snapshots,
                params: Value::Null,
                repository: None,
            }));
            let Message::CommandResult(result) = reply.message else {
                panic!("{reply:?}")
            };
            assert!(!result.accepted);
            assert_eq!(result.reason, Some(RejectReason::BadParams));
            let message = result.message.unwrap_or_default();
            assert!(
                message.starts_with("`job_id` must be a job id"),
                "{message}"
            );
            assert!(message.len() < 300, "bounded: {}", message.len());
            assert!(result.job_id.chars().count() <= SHOWN_CHARS);
        }
        let ok = parse(Frame::new(CommandRun {
            job_id: JOB.into(),
            kind: JobKind::Snapshots,
            params: Value::Null,
            repository: None,
        }));
        assert!(matches!(ok, Ok(Inbound::Run(Run { job_id, .. })) if job_id.to_string() == JOB));
    }

    #[test]
    fn cancels_acks_and_schedules_with_bad_ids_are_refused() {
        for bad in HOSTILE {
            let cancel = refused(Frame::new(CommandCancel {
                job_id: (*bad).into(),
            }));
            assert!(error_text(&cancel).contains("`job_id` of `command.cancel`"));
            let ack = refused(Frame::new(JobAck {
                job_id: (*bad).into(),
                done: true,
                ..JobAck::default()
            }));
            assert!(error_text(&ack).contains("`job_id` of `job.ack`"));
            let set = refused(Frame::new(ScheduleSet {
                version: 9,
                schedules: vec![Schedule {
                    id: (*bad).into(),
                    kind: JobKind::Backup,
                    cron: "@daily".into(),
                    timezone: None,
                    params: serde_json::json!({"paths": ["/srv"]}),
                    enabled: true,
                    jitter_seconds: 0,
                }],
            }));
            let text = error_text(&set);
            assert!(
                text.contains("`schedules[0].id`") && text.contains("version 9 was not applied"),
                "{text}"
            );
        }
    }

    #[test]
    fn tree_lists_need_a_request_id_a_snapshot_id_and_an_absolute_path() {
        let request = |id: &str, snapshot: &str, path: &str| {
            Frame::with_id(
                id,
                TreeList {
                    snapshot_id: snapshot.into(),
                    path: path.into(),
                },
            )
        };
        for bad in HOSTILE {
            let reply = refused(request(bad, "abcd1234", "/"));
            assert_eq!(reply.id, None);
            assert!(error_text(&reply).contains("`id` of `tree.list`"));
            let reply = refused(request(RPC, bad, "/"));
            assert_eq!(reply.id.as_deref(), Some(RPC), "answers the request");
            assert!(error_text(&reply).contains("`snapshot_id`"));
        }
        for bad in ["", "etc", "/a/../../etc", "/a\0b", "-r"] {
            let reply = refused(request(RPC, "abcd1234", bad));
            assert!(error_text(&reply).contains("`path`"), "{bad:?}");
        }
        assert!(matches!(
            parse(request(RPC, "abcd1234", "/home")),
            Ok(Inbound::TreeList { .. })
        ));
    }
}
