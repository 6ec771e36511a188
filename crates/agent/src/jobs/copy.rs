//! The `copy` job (3-2-1): this host's snapshots copied from its
//! repository to the repository's `copy_to`, whose repository is made with
//! the same chunker parameters when it does not exist yet.

use super::*;

impl<'a> Job<'a> {
    /// [`Job::command`] against another repository than the job's own
    /// (the copy destination).
    async fn command_on(&mut self, repo: &'a Repository, command: Command) -> Finished {
        let own = std::mem::replace(&mut self.repo, repo);
        let finished = self.command(command).await;
        self.repo = own;
        finished
    }

    /// A failure before (or between) restic runs, logged and reported.
    fn refuse(&mut self, error: String) -> (Finished, Value) {
        self.log.line(LogStreamKind::Stderr, error.clone());
        (
            finished_without_restic(Status::Failed, Some(error)),
            Value::Null,
        )
    }

    /// `restic copy` of this host's snapshots from its repository to the
    /// repository's `copy_to`, initialising the destination first when it
    /// has no repository yet (with this repository's chunker parameters,
    /// so what is copied deduplicates there as it does here). restic skips
    /// snapshots copied before, so running it again copies only new ones.
    /// The destination's snapshots are not reported: the host's list and
    /// statistics are those of its own repository.
    pub(super) async fn copy(&mut self, copy: &CopyParams) -> (Finished, Value) {
        let Some(target) = self.copy_to else {
            return self.refuse(String::from(
                "this host's repository has no `copy_to`; nothing to copy to",
            ));
        };
        let hostname = self.runner.hostname().to_owned();
        // restic ignores `--host` for snapshots named by id: check they are
        // this host's, so a shared repository's other snapshots stay put.
        if !copy.snapshot_ids.is_empty() {
            let listing = Command::Snapshots { host: None };
            let limits = self.limits(&listing, self.cancel);
            let own = match self
                .restic
                .snapshots(self.repo, Some(&hostname), &limits)
                .await
            {
                Ok(own) => own,
                Err(e) => {
                    return self.refuse(format!(
                        "could not list this host's snapshots to check the ones to copy: {e}"
                    ))
                }
            };
            for id in &copy.snapshot_ids {
                let id = id.to_ascii_lowercase();
                if !own.iter().any(|s| s.id.starts_with(&id)) {
                    return self.refuse(format!(
                        "snapshot {id} is not one of this host's ({hostname}) snapshots in its repository; a copy job copies only the host's own"
                    ));
                }
            }
        }
        let destination = target.redacted_url();
        let probe = self.limits(&Command::CatConfig, self.cancel);
        let initialised = match self.restic.repository_exists(target, &probe).await {
            Ok(true) => false,
            Ok(false) => {
                self.log.line(
                    LogStreamKind::Stdout,
                    format!(
                        "there is no repository at {destination} yet: initialising it with this repository's chunker parameters (restic init --copy-chunker-params)"
                    ),
                );
                let init = self
                    .command_on(
                        target,
                        Command::InitFrom {
                            from: self.repo.clone(),
                        },
                    )
                    .await;
                if !init.succeeded() && init.kind != Some(FailureKind::AlreadyInitialized) {
                    let error = format!(
                        "could not initialise the copy destination {destination}: {}",
                        init.error.as_deref().unwrap_or("restic init failed")
                    );
                    return (
                        Finished {
                            error: Some(error),
                            ..init
                        },
                        Value::Null,
                    );
                }
                true
            }
            Err(e) => {
                return self.refuse(format!(
                    "could not open the copy destination {destination}: {e}"
                ))
            }
        };
        self.log.line(
            LogStreamKind::Stdout,
            format!("copying this host's ({hostname}) snapshots to {destination}"),
        );
        let finished = self
            .command_on(
                target,
                Command::Copy {
                    from: self.repo.clone(),
                    host: Some(hostname),
                    tags: copy.tags.clone(),
                    snapshot_ids: copy.snapshot_ids.clone(),
                },
            )
            .await;
        let mut stats = finished.stats.clone();
        if let Value::Object(fields) = &mut stats {
            fields.insert(
                String::from("destination_initialized"),
                Value::Bool(initialised),
            );
        }
        if finished.succeeded() {
            let copied = stats.get("snapshots_copied").and_then(Value::as_u64);
            self.log.line(
                LogStreamKind::Stdout,
                match copied {
                    Some(0) => {
                        format!("nothing new to copy: {destination} has every snapshot already")
                    }
                    Some(n) => format!("copied {n} snapshots to {destination}"),
                    None => format!("copied to {destination}"),
                },
            );
        }
        (finished, stats)
    }
}
