//! Where a restore may write on this host. The server decides *what* to
//! restore; the host decides where it will let restic write, so a stolen
//! operator account or a mistyped target cannot overwrite the agent's own
//! credentials or the operating system.
//!
//! restic writes each restored file at `target` joined with the file's path
//! in the snapshot, so with includes the places written are `target +
//! include` for each include, and without includes anything below
//! `target`. Those *destinations* are checked:
//!
//! * never at, inside, or above the agent's state directory (a restore
//!   "above" it could replace `agent.json`, the cached credentials or the
//!   spool with the snapshot's copies);
//! * not `/` itself (the whole snapshot over the root) and not at or inside
//!   a system folder ([`SYSTEM_FOLDERS`]), unless the host's operator opted
//!   in locally (`allow_restore_to_system_paths` in `agent.json`, or
//!   `agent run --allow-restore-to-system-paths`).
//!
//! Each destination is checked as written and with symbolic links in its
//! existing part resolved, so `/srv/link-to-etc/x` counts as `/etc/x`.

use std::path::{Component, Path, PathBuf};

use rm_protocol::params::RestoreParams;

/// Folders the operating system lives in. Restoring into them (or onto `/`
/// itself) needs the host's own opt-in. `/var/lib` holds services' state
/// (databases, package manager), which a restore must not overwrite by
/// accident; `/home`, `/srv`, `/opt`, `/tmp` and `/var` outside `/var/lib`
/// are ordinary restore destinations.
pub(crate) const SYSTEM_FOLDERS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/lib",
];

/// Why a restore may not run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RestoreRefused {
    /// A destination is the agent's state directory, inside it, or above it.
    #[error(
        "restoring to `{destination}` could overwrite this agent's state directory `{state_dir}` \
         (its token and credentials); choose a target outside it"
    )]
    StateDir {
        /// Where the restore would write.
        destination: String,
        /// The agent's state directory.
        state_dir: String,
    },
    /// The whole snapshot onto `/`.
    #[error(
        "restoring the whole snapshot onto `/` would write over system folders; list the paths \
         to restore (`include`) or choose another target, or allow restores to system paths on \
         this host (`--allow-restore-to-system-paths`)"
    )]
    Root,
    /// A destination is a system folder or inside one.
    #[error(
        "restoring to `{destination}` writes into the system folder `{folder}`; choose another \
         target, or allow restores to system paths on this host \
         (`--allow-restore-to-system-paths`)"
    )]
    SystemFolder {
        /// Where the restore would write.
        destination: String,
        /// The protected folder it is in.
        folder: &'static str,
    },
}

/// The host's rules for restore destinations.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestoreGuard {
    /// The agent's state directory (`None` in tests that have none).
    state_dir: Option<PathBuf>,
    /// The operator allowed restores to `/` and into system folders.
    allow_system_paths: bool,
}

impl RestoreGuard {
    /// Rules protecting `state_dir`, and system folders unless
    /// `allow_system_paths`.
    pub(crate) fn new(state_dir: impl Into<PathBuf>, allow_system_paths: bool) -> Self {
        RestoreGuard {
            state_dir: Some(state_dir.into()),
            allow_system_paths,
        }
    }

    /// Checks a restore's destinations on this host's file system.
    pub(crate) fn check(&self, params: &RestoreParams) -> Result<(), RestoreRefused> {
        let state_dirs: Vec<PathBuf> = self
            .state_dir
            .iter()
            .flat_map(|dir| [dir.clone(), resolve(dir)])
            .collect();
        for destination in destinations(&params.target, &params.include) {
            for seen_as in [destination.clone(), resolve(&destination)] {
                check_destination(&seen_as, &state_dirs, self.allow_system_paths)?;
            }
        }
        Ok(())
    }
}

/// Where restic writes: `target` joined with each include, or `target`
/// itself (and everything below it) when there are none.
pub(crate) fn destinations(target: &str, include: &[String]) -> Vec<PathBuf> {
    let target = lexical(Path::new(target));
    if include.is_empty() {
        return vec![target];
    }
    include
        .iter()
        .map(|path| {
            lexical(&target.join(Path::new(path).strip_prefix("/").unwrap_or(Path::new(path))))
        })
        .collect()
}

/// The rules for one destination, given as an absolute, normalised path.
pub(crate) fn check_destination(
    destination: &Path,
    state_dirs: &[PathBuf],
    allow_system_paths: bool,
) -> Result<(), RestoreRefused> {
    let shown = || destination.display().to_string();
    if !allow_system_paths {
        if destination == Path::new("/") {
            return Err(RestoreRefused::Root);
        }
        if let Some(folder) = SYSTEM_FOLDERS
            .iter()
            .find(|folder| destination.starts_with(folder))
        {
            return Err(RestoreRefused::SystemFolder {
                destination: shown(),
                folder,
            });
        }
    }
    for state_dir in state_dirs {
        if destination.starts_with(state_dir) || state_dir.starts_with(destination) {
            return Err(RestoreRefused::StateDir {
                destination: shown(),
                state_dir: state_dir.display().to_string(),
            });
        }
    }
    Ok(())
}

/// `path` with `.` dropped and `..` applied, without touching the disk.
/// Params are validated to have neither; this keeps the check sound even
/// if that ever changes.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `path` with symbolic links in its longest existing ancestor resolved and
/// the rest appended, so a link pointing into a protected folder is seen
/// there. Falls back to `path` when nothing can be resolved.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut resolved = real;
            resolved.extend(rest.iter().rev());
            return lexical(&resolved);
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "/var/lib/restic-manager";

    fn params(target: &str, include: &[&str]) -> RestoreParams {
        RestoreParams {
            snapshot_id: "1a2b3c4d".into(),
            source_host_id: None,
            include: include.iter().map(|s| s.to_string()).collect(),
            target: target.into(),
        }
    }

    fn check(target: &str, include: &[&str], allow: bool) -> Result<(), RestoreRefused> {
        let state = [PathBuf::from(STATE)];
        destinations(
            target,
            &include.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .iter()
        .try_for_each(|d| check_destination(d, &state, allow))
    }

    #[test]
    fn destinations_join_target_and_include() {
        assert_eq!(destinations("/tmp/r", &[]), [PathBuf::from("/tmp/r")]);
        assert_eq!(
            destinations("/tmp/r/", &["/home/x".into(), "/etc/hosts".into()]),
            [
                PathBuf::from("/tmp/r/home/x"),
                PathBuf::from("/tmp/r/etc/hosts")
            ]
        );
        assert_eq!(
            destinations("/", &["/home/x".into()]),
            [PathBuf::from("/home/x")]
        );
        assert_eq!(destinations("/", &[]), [PathBuf::from("/")]);
    }

    #[test]
    fn ordinary_restores_pass() {
        assert_eq!(check("/tmp/restore", &[], false), Ok(()));
        assert_eq!(
            check("/srv/restore", &["/etc", "/var/lib/x"], false),
            Ok(())
        );
        // "Restore to the original location" of a home directory.
        assert_eq!(check("/", &["/home/alice", "/srv/www"], false), Ok(()));
        // Look-alikes of protected names are not protected.
        assert_eq!(
            check("/", &["/etcetera", "/usrdata", "/var/library"], false),
            Ok(())
        );
        assert_eq!(check("/var/lib-restore", &[], false), Ok(()));
    }

    #[test]
    fn system_folders_need_the_opt_in() {
        for (target, include, folder) in [
            ("/", vec!["/etc/passwd"], "/etc"),
            ("/etc", vec![], "/etc"),
            ("/usr/local/restore", vec![], "/usr"),
            ("/var", vec!["/lib/postgresql"], "/var/lib"),
            ("/", vec!["/home/x", "/boot"], "/boot"),
        ] {
            match check(target, &include, false) {
                Err(RestoreRefused::SystemFolder { folder: f, .. }) => assert_eq!(f, folder),
                other => panic!("{target} {include:?}: {other:?}"),
            }
            assert_eq!(
                check(target, &include, true),
                Ok(()),
                "{target} {include:?}"
            );
        }
        assert_eq!(check("/", &[], false), Err(RestoreRefused::Root));
        assert_eq!(
            check("/", &[], true),
            Err(RestoreRefused::StateDir {
                destination: "/".into(),
                state_dir: STATE.into()
            }),
            "the whole snapshot onto `/` covers the state directory"
        );
    }

    #[test]
    fn the_state_dir_is_never_a_destination() {
        for (target, include) in [
            (STATE, vec![]),
            ("/var/lib/restic-manager/cache", vec![]),
            ("/", vec!["/var/lib/restic-manager/agent.json"]),
            // Above it: the snapshot's copy of the state dir would land on it.
            ("/", vec!["/var"]),
            ("/var", vec![]),
        ] {
            // Without the opt-in most are refused as system paths first.
            assert!(check(target, &include, false).is_err());
            let refused = check(target, &include, true).unwrap_err();
            assert!(
                matches!(refused, RestoreRefused::StateDir { .. }),
                "{target} {include:?}: {refused:?}"
            );
            assert!(refused.to_string().contains(STATE), "{refused}");
        }
        assert_eq!(check("/var/lib/restic-manager-old", &[], true), Ok(()));
        // A state directory outside the system folders is protected as such.
        let home_state = [PathBuf::from("/home/agent/state")];
        let refused = check_destination(Path::new("/home/agent"), &home_state, false);
        assert!(
            matches!(refused, Err(RestoreRefused::StateDir { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn refusals_say_what_and_how_to_allow_it() {
        let refused = check("/", &["/etc/ssh"], false).unwrap_err().to_string();
        assert!(
            refused.contains("`/etc/ssh`") && refused.contains("`/etc`"),
            "{refused}"
        );
        assert!(
            refused.contains("--allow-restore-to-system-paths"),
            "{refused}"
        );
    }

    #[test]
    fn symbolic_links_are_followed_to_where_they_lead() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap_or_else(|e| panic!("{e}"));
        let link = tmp.path().join("innocent");
        std::os::unix::fs::symlink(&state, &link).unwrap_or_else(|e| panic!("{e}"));
        let guard = RestoreGuard::new(&state, true);
        let target = link.join("not-yet-there").display().to_string();
        assert!(matches!(
            guard.check(&params(&target, &[])),
            Err(RestoreRefused::StateDir { .. })
        ));
        let etc_link = tmp.path().join("etc-link");
        std::os::unix::fs::symlink("/etc", &etc_link).unwrap_or_else(|e| panic!("{e}"));
        let guard = RestoreGuard::new(&state, false);
        let refused = guard.check(&params(&etc_link.display().to_string(), &["/x"]));
        assert!(
            matches!(
                refused,
                Err(RestoreRefused::SystemFolder { folder: "/etc", .. })
            ),
            "{refused:?}"
        );
        let fine = tmp.path().join("restore").display().to_string();
        assert_eq!(guard.check(&params(&fine, &["/home/a"])), Ok(()));
    }
}
