//! Where a restore may write on this host. The server decides *what* to
//! restore; the host decides where it will let restic write, so a stolen
//! operator account or a mistyped target cannot overwrite the agent's own
//! credentials or program, give itself a login, or overwrite the operating
//! system.
//!
//! restic writes each restored node at `target` joined with the node's path
//! in the snapshot. Two checks, both against the same rules:
//!
//! * when the job is accepted, the *destinations* `target + include` (or
//!   `target` itself, without includes) — a refusal here is a `bad_params`
//!   rejection and restic never starts;
//! * before restic restores, *every path it would write*: the agent lists
//!   the parts to restore with `restic ls --recursive <snapshot> <includes>`
//!   (exactly the nodes `restore --include` selects: an include selects
//!   itself and everything below it) and checks each node's destination,
//!   streaming, so a snapshot of any size is checked in bounded memory
//!   ([`WriteCheck`]).
//!
//! The rules:
//!
//! * never at or inside the agent's state directory, and for the first
//!   check not above it either (a restore "above" it could replace
//!   `agent.json`, the cached credentials or the spool);
//! * never the agent's own program ([`std::env::current_exe`], resolved);
//! * not `/` itself (the whole snapshot over the root), not at or inside a
//!   protected folder ([`PROTECTED_FOLDERS`]: the system's folders, `/root`
//!   and `/var/spool`), and not inside any `.ssh` folder at any depth,
//!   unless the host's administrator opted in locally
//!   (`allow_restore_to_system_paths` in `agent.json`, or `agent run
//!   --allow-restore-to-system-paths`). The opt-in lifts `/root`, `.ssh`
//!   and `/var/spool` with the system folders: with `/etc` writable a
//!   restore can make itself root anyway (`/etc/sudoers.d`, `/etc/cron.d`),
//!   so keeping them closed would protect nothing and would only stop a
//!   whole-system recovery. The state directory and the program stay closed:
//!   overwriting them breaks the agent doing the restore.
//!
//! Each destination is checked as written and with symbolic links on disk
//! resolved (including a dangling link at its end, which restic would
//! write through), so `/srv/link-to-etc/x` counts as `/etc/x`. A snapshot
//! holding a folder and a symbolic link at one path (only a crafted
//! repository has that) is refused: restic would create the link and then
//! write the folder's files through it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use rm_protocol::params::RestoreParams;
use rm_restic::NodeType;

/// Folders a restore needs the host's opt-in for. The operating system's
/// own folders; `/var/lib` holds services' state (databases, the package
/// manager); `/root` is the administrator's home (its `.ssh`, shell start-up
/// files); `/var/spool` holds crontabs and `at` jobs, which run as their
/// owner. `/usr` covers `/usr/local` (its `etc`, `bin`, `sbin`). `/home`,
/// `/srv`, `/opt`, `/tmp` and the rest of `/var` are ordinary restore
/// destinations — except their `.ssh` folders.
pub(crate) const PROTECTED_FOLDERS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/spool",
];

/// The folder name protected wherever it is: SSH reads a user's login keys
/// (`authorized_keys`) and client settings from it.
pub(crate) const SSH_FOLDER: &str = ".ssh";

/// How a refusal ends: what the operator can do about it.
const HOW_TO_ALLOW: &str =
    "choose another target or other parts of the snapshot, or allow restores to system paths on \
     this host (`--allow-restore-to-system-paths`)";

/// Why a restore may not run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RestoreRefused {
    /// A destination is the agent's state directory, inside it, or above it.
    #[error(
        "the restore guard refused: restoring to `{destination}` could overwrite this agent's \
         state directory `{state_dir}` (its token and credentials); choose a target outside it"
    )]
    StateDir {
        /// Where the restore would write.
        destination: String,
        /// The agent's state directory.
        state_dir: String,
    },
    /// A destination is the agent's own program.
    #[error(
        "the restore guard refused: restoring would write `{destination}`, this agent's own \
         program `{binary}`; choose a target that does not cover it"
    )]
    AgentBinary {
        /// Where the restore would write.
        destination: String,
        /// The running agent's executable.
        binary: String,
    },
    /// The whole snapshot onto `/`.
    #[error(
        "the restore guard refused: restoring the whole snapshot onto `/` would write over \
         system folders; list the paths to restore (`include`) or choose another target, or \
         allow restores to system paths on this host (`--allow-restore-to-system-paths`)"
    )]
    Root,
    /// A destination is a protected folder or inside one.
    #[error(
        "the restore guard refused: restoring would write `{destination}`, inside the protected \
         folder `{folder}`; {HOW_TO_ALLOW}"
    )]
    ProtectedFolder {
        /// Where the restore would write.
        destination: String,
        /// The protected folder it is in.
        folder: &'static str,
    },
    /// A destination is inside a `.ssh` folder.
    #[error(
        "the restore guard refused: restoring would write `{destination}`, inside a `.ssh` folder \
         (protected wherever it is: it holds SSH login keys); {HOW_TO_ALLOW}"
    )]
    SshFolder {
        /// Where the restore would write.
        destination: String,
    },
    /// The snapshot has a folder and a symbolic link at the same path.
    #[error(
        "the restore guard refused: the snapshot has both a symbolic link and a folder at \
         `{path}`; restic would write the folder's files through the link"
    )]
    LinkedFolder {
        /// The path inside the snapshot.
        path: String,
    },
}

/// The host's rules for restore destinations.
#[derive(Debug, Clone)]
pub(crate) struct RestoreGuard {
    /// The agent's state directory (`None` in tests that have none).
    state_dir: Option<PathBuf>,
    /// The agent's own executable, as run and resolved.
    binary: Option<PathBuf>,
    /// The administrator allowed restores to `/`, into protected folders
    /// and `.ssh` folders.
    allow_system_paths: bool,
}

impl Default for RestoreGuard {
    fn default() -> Self {
        RestoreGuard {
            state_dir: None,
            binary: own_binary(),
            allow_system_paths: false,
        }
    }
}

/// The running program, with symbolic links resolved (`/usr/bin/x` may be
/// a link into `/opt`): the file a restore must not replace.
fn own_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.canonicalize().unwrap_or(exe))
}

impl RestoreGuard {
    /// Rules protecting `state_dir` and this program, and protected folders
    /// unless `allow_system_paths`.
    pub(crate) fn new(state_dir: impl Into<PathBuf>, allow_system_paths: bool) -> Self {
        RestoreGuard {
            state_dir: Some(state_dir.into()),
            allow_system_paths,
            ..RestoreGuard::default()
        }
    }

    /// Checks a restore's destinations (`target + include`) on this host's
    /// file system.
    pub(crate) fn check(&self, params: &RestoreParams) -> Result<(), RestoreRefused> {
        let rules = self.rules();
        for destination in destinations(&params.target, &params.include) {
            for seen_as in [destination.clone(), resolve_leaf(&destination)] {
                rules.check(&seen_as, true)?;
            }
        }
        Ok(())
    }

    /// A check of every node a restore into `target` writes, fed from
    /// `restic ls --recursive` in its order.
    pub(crate) fn writes(&self, target: &str) -> WriteCheck {
        WriteCheck {
            rules: self.rules(),
            target: lexical(Path::new(target)),
            stack: Vec::new(),
        }
    }

    fn rules(&self) -> Rules {
        let both = |path: &Option<PathBuf>| -> Vec<PathBuf> {
            path.iter()
                .flat_map(|p| [lexical(p), resolve_leaf(p)])
                .collect()
        };
        Rules {
            state_dirs: both(&self.state_dir),
            binaries: both(&self.binary),
            allow_system_paths: self.allow_system_paths,
        }
    }
}

/// The rules, with the agent's own paths resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    state_dirs: Vec<PathBuf>,
    binaries: Vec<PathBuf>,
    allow_system_paths: bool,
}

impl Rules {
    /// The rules for one destination (absolute, normalised). `whole` says
    /// it stands for everything restored below it (a target or an include),
    /// so a destination above the state directory is refused too.
    fn check(&self, destination: &Path, whole: bool) -> Result<(), RestoreRefused> {
        let shown = || destination.display().to_string();
        if !self.allow_system_paths {
            self.check_protected(destination, whole)?;
        }
        for state_dir in &self.state_dirs {
            if destination.starts_with(state_dir) || (whole && state_dir.starts_with(destination)) {
                return Err(RestoreRefused::StateDir {
                    destination: shown(),
                    state_dir: state_dir.display().to_string(),
                });
            }
        }
        for binary in &self.binaries {
            if destination.starts_with(binary) {
                return Err(RestoreRefused::AgentBinary {
                    destination: shown(),
                    binary: binary.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The rules the host's opt-in lifts.
    fn check_protected(&self, destination: &Path, whole: bool) -> Result<(), RestoreRefused> {
        let shown = || destination.display().to_string();
        if whole && destination == Path::new("/") {
            return Err(RestoreRefused::Root);
        }
        if let Some(folder) = PROTECTED_FOLDERS
            .iter()
            .find(|folder| destination.starts_with(folder))
        {
            return Err(RestoreRefused::ProtectedFolder {
                destination: shown(),
                folder,
            });
        }
        if destination
            .components()
            .any(|c| c == Component::Normal(SSH_FOLDER.as_ref()))
        {
            return Err(RestoreRefused::SshFolder {
                destination: shown(),
            });
        }
        Ok(())
    }
}

/// One folder of the snapshot on the way down to the node being checked.
#[derive(Debug)]
struct Folder {
    /// Its path inside the snapshot (normalised).
    path: PathBuf,
    /// Where restic writes it, symbolic links on disk resolved.
    resolved: PathBuf,
    /// Whether something exists there on disk now. Below a folder that
    /// does not, nothing does, so no file system call is needed.
    exists: bool,
    /// Its children that are symbolic links in the snapshot.
    links: HashSet<OsString>,
}

/// Checks the nodes of a listing one by one. Memory is bounded by the
/// depth of the tree (and the symbolic links of the folders on the current
/// path), not its size: `restic ls` walks depth first, so only the folders
/// leading to the current node are kept.
#[derive(Debug)]
pub(crate) struct WriteCheck {
    rules: Rules,
    target: PathBuf,
    stack: Vec<Folder>,
}

impl WriteCheck {
    /// Checks the node at `path` (inside the snapshot) of type `kind`.
    pub(crate) fn node(&mut self, path: &str, kind: NodeType) -> Result<(), RestoreRefused> {
        let path = lexical(Path::new(path));
        while let Some(top) = self.stack.last() {
            if path.starts_with(&top.path) && path != top.path {
                break;
            }
            self.stack.pop();
        }
        let destination = lexical(&self.target.join(path.strip_prefix("/").unwrap_or(&path)));
        let name = path.file_name().map(|n| n.to_os_string());
        let parent = self
            .stack
            .last_mut()
            .filter(|top| Some(top.path.as_path()) == path.parent());
        let (resolved, exists) = match (parent, &name) {
            (Some(parent), Some(name)) => {
                if kind == NodeType::Dir && parent.links.contains(name) {
                    return Err(RestoreRefused::LinkedFolder {
                        path: path.display().to_string(),
                    });
                }
                if kind == NodeType::Symlink {
                    parent.links.insert(name.clone());
                }
                if parent.exists {
                    on_disk(&destination)
                } else {
                    (parent.resolved.join(name), false)
                }
            }
            _ => on_disk(&destination),
        };
        self.rules.check(&destination, false)?;
        self.rules.check(&resolved, false)?;
        if kind == NodeType::Dir {
            self.stack.push(Folder {
                path,
                resolved,
                exists,
                links: HashSet::new(),
            });
        }
        Ok(())
    }
}

/// Where writing `path` lands, and whether anything is there now.
fn on_disk(path: &Path) -> (PathBuf, bool) {
    let exists = path.symlink_metadata().is_ok();
    (resolve_leaf(path), exists)
}

/// An include as `restic ls` takes it: no trailing `/` (`/` stays).
pub(crate) fn snapshot_dir(include: &str) -> String {
    let trimmed = include.trim_end_matches('/');
    if trimmed.is_empty() {
        String::from("/")
    } else {
        trimmed.to_owned()
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

/// `path` with `.` dropped and `..` applied, without touching the disk.
/// Params are validated to have neither, and restic refuses such node
/// names; this keeps the check sound even if that ever changes.
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

/// Most symbolic links followed at the end of one path (as the kernel's
/// own limit, so a loop ends).
const MAX_LINKS: usize = 40;

/// `path` as the kernel would open it for writing: symbolic links in its
/// existing part resolved and, when it ends in a dangling link, the link
/// followed (creating a file through it writes where it points).
fn resolve_leaf(path: &Path) -> PathBuf {
    let mut path = lexical(path);
    for _ in 0..MAX_LINKS {
        if let Ok(real) = path.canonicalize() {
            return real;
        }
        match std::fs::read_link(&path) {
            Ok(link) => {
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                path = lexical(&base.join(link));
            }
            Err(_) => return resolve(&path),
        }
    }
    path
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
    const BINARY: &str = "/usr/local/bin/restic-manager";

    fn params(target: &str, include: &[&str]) -> RestoreParams {
        RestoreParams {
            snapshot_id: "1a2b3c4d".into(),
            source_host_id: None,
            include: include.iter().map(|s| s.to_string()).collect(),
            target: target.into(),
            limit_upload_kib: None,
            limit_download_kib: None,
        }
    }

    fn guard(state: &str, allow: bool) -> RestoreGuard {
        RestoreGuard {
            state_dir: Some(PathBuf::from(state)),
            binary: Some(PathBuf::from(BINARY)),
            allow_system_paths: allow,
        }
    }

    fn check(target: &str, include: &[&str], allow: bool) -> Result<(), RestoreRefused> {
        guard(STATE, allow).check(&params(target, include))
    }

    /// Feeds a listing (path, type) through the per-node check.
    fn walk(target: &str, nodes: &[(&str, NodeType)], allow: bool) -> Result<(), RestoreRefused> {
        let mut check = guard(STATE, allow).writes(target);
        nodes
            .iter()
            .try_for_each(|(path, kind)| check.node(path, *kind))
    }

    use NodeType::{Dir, File, Symlink};

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
        assert_eq!(snapshot_dir("/home/x/"), "/home/x");
        assert_eq!(snapshot_dir("/"), "/");
    }

    #[test]
    fn ordinary_restores_pass() {
        assert_eq!(check("/tmp/restore", &[], false), Ok(()));
        assert_eq!(
            check("/srv/restore", &["/etc", "/var/lib/x", "/root"], false),
            Ok(())
        );
        // "Restore to the original location" of a home directory.
        assert_eq!(check("/", &["/home/alice", "/srv/www"], false), Ok(()));
        // Look-alikes of protected names are not protected.
        assert_eq!(
            check(
                "/",
                &[
                    "/etcetera",
                    "/usrdata",
                    "/var/library",
                    "/rootfs",
                    "/var/spoolish",
                    "/srv/.sshx",
                    "/srv/ssh"
                ],
                false
            ),
            Ok(())
        );
        assert_eq!(check("/var/lib-restore", &[], false), Ok(()));
        assert_eq!(
            walk(
                "/srv/restore",
                &[
                    ("/home", Dir),
                    ("/home/alice", Dir),
                    ("/home/alice/notes", File)
                ],
                false
            ),
            Ok(())
        );
    }

    #[test]
    fn protected_folders_need_the_opt_in() {
        for (target, include, folder) in [
            ("/", vec!["/etc/passwd"], "/etc"),
            ("/etc", vec![], "/etc"),
            // `/usr/local` and its `etc`, `bin`, `sbin` are under `/usr`.
            ("/usr/local/restore", vec![], "/usr"),
            ("/", vec!["/usr/local/etc/sudoers"], "/usr"),
            ("/var", vec!["/lib/postgresql"], "/var/lib"),
            ("/", vec!["/home/x", "/boot"], "/boot"),
            ("/root", vec![], "/root"),
            ("/", vec!["/root/.bashrc"], "/root"),
            ("/var/spool/cron", vec![], "/var/spool"),
            ("/", vec!["/var/spool/cron/crontabs/root"], "/var/spool"),
        ] {
            match check(target, &include, false) {
                Err(RestoreRefused::ProtectedFolder { folder: f, .. }) => assert_eq!(f, folder),
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
    fn ssh_folders_are_protected_at_any_depth_and_in_any_target() {
        for (target, include) in [
            ("/home/bob/.ssh", vec![]),
            ("/", vec!["/home/alice/.ssh"]),
            ("/srv/restore", vec!["/home/alice/.ssh/authorized_keys"]),
            ("/tmp/x/.ssh/deeper", vec![]),
        ] {
            assert!(
                matches!(
                    check(target, &include, false),
                    Err(RestoreRefused::SshFolder { .. })
                ),
                "{target} {include:?}"
            );
            assert_eq!(
                check(target, &include, true),
                Ok(()),
                "{target} {include:?}"
            );
        }
        // Found in the listing, below an include that looked harmless.
        let listing = [
            ("/home/alice", Dir),
            ("/home/alice/notes", File),
            ("/home/alice/.ssh", Dir),
            ("/home/alice/.ssh/authorized_keys", File),
        ];
        let refused = walk("/", &listing, false).unwrap_err();
        assert_eq!(
            refused,
            RestoreRefused::SshFolder {
                destination: "/home/alice/.ssh".into()
            }
        );
        // Into a scratch folder too: the rule is ".ssh anywhere".
        assert!(matches!(
            walk("/srv/restore", &listing, false),
            Err(RestoreRefused::SshFolder { .. })
        ));
        assert_eq!(walk("/srv/restore", &listing, true), Ok(()));
    }

    #[test]
    fn every_listed_path_is_checked_not_only_the_includes() {
        let refused = walk(
            "/",
            &[
                ("/srv", Dir),
                ("/srv/app", Dir),
                ("/root", Dir),
                ("/root/.profile", File),
            ],
            false,
        )
        .unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("restoring would write `/root`, inside the protected folder `/root`"),
            "{text}"
        );
        assert!(text.starts_with("the restore guard refused"), "{text}");
        // The state dir and the program, even with the opt-in.
        for (path, what) in [
            ("/var/lib/restic-manager/agent.json", "state directory"),
            (BINARY, "own program"),
        ] {
            let refused = walk("/", &[(path, File)], true).unwrap_err().to_string();
            assert!(refused.contains(what), "{refused}");
        }
        // A folder above the state dir is fine when listed node by node:
        // only what is in the snapshot is written.
        assert_eq!(walk("/", &[("/var/lib", Dir)], true), Ok(()));
    }

    #[test]
    fn a_folder_behind_a_link_of_the_same_name_is_refused() {
        let refused = walk(
            "/srv/restore",
            &[
                ("/data", Dir),
                ("/data/a", Symlink),
                ("/data/a", Dir),
                ("/data/a/x", File),
            ],
            false,
        );
        assert_eq!(
            refused,
            Err(RestoreRefused::LinkedFolder {
                path: "/data/a".into()
            })
        );
        // Links of other names, and a later sibling folder, are fine.
        assert_eq!(
            walk(
                "/srv/restore",
                &[
                    ("/data", Dir),
                    ("/data/a", Symlink),
                    ("/data/b", Dir),
                    ("/data/b/a", Dir)
                ],
                false
            ),
            Ok(())
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
            // Without the opt-in some are refused as protected paths first.
            assert!(check(target, &include, false).is_err());
            let refused = check(target, &include, true).unwrap_err();
            assert!(
                matches!(refused, RestoreRefused::StateDir { .. }),
                "{target} {include:?}: {refused:?}"
            );
            assert!(refused.to_string().contains(STATE), "{refused}");
        }
        assert_eq!(check("/var/lib/restic-manager-old", &[], true), Ok(()));
        // A state directory outside the protected folders is protected as such.
        let refused = guard("/home/agent/state", false).check(&params("/home/agent", &[]));
        assert!(
            matches!(refused, Err(RestoreRefused::StateDir { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn the_running_program_is_protected() {
        let exe = own_binary().unwrap();
        let guard = RestoreGuard::new("/nonexistent/state", true);
        let target = exe.parent().unwrap().display().to_string();
        let mut writes = guard.writes("/");
        let refused = writes.node(&exe.display().to_string(), File).unwrap_err();
        assert!(
            matches!(refused, RestoreRefused::AgentBinary { .. }),
            "{refused:?}"
        );
        assert!(matches!(
            guard.check(&params("/", &[&exe.display().to_string()])),
            Err(RestoreRefused::AgentBinary { .. })
        ));
        // Its folder as a target is fine as long as the program is not written.
        assert_eq!(guard.check(&params(&target, &["/x"])), Ok(()));
    }

    #[test]
    fn refusals_say_what_and_how_to_allow_it() {
        let refused = check("/", &["/etc/ssh"], false).unwrap_err().to_string();
        assert!(
            refused.contains("`/etc/ssh`") && refused.contains("protected folder `/etc`"),
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
                Err(RestoreRefused::ProtectedFolder { folder: "/etc", .. })
            ),
            "{refused:?}"
        );
        let fine = tmp.path().join("restore").display().to_string();
        assert_eq!(guard.check(&params(&fine, &["/home/a"])), Ok(()));

        // Inside the restore: a folder on disk that is a link into a
        // protected place, and a dangling link restic would write through.
        let restore = tmp.path().join("restore");
        std::fs::create_dir_all(restore.join("srv")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/root", restore.join("srv/home"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/etc/restic-manager-never", restore.join("srv/dangling"))
            .unwrap_or_else(|e| panic!("{e}"));
        let target = restore.display().to_string();
        let mut writes = guard.writes(&target);
        writes.node("/srv", Dir).unwrap_or_else(|e| panic!("{e}"));
        let refused = writes.node("/srv/home", Dir);
        assert!(
            matches!(
                refused,
                Err(RestoreRefused::ProtectedFolder {
                    folder: "/root",
                    ..
                })
            ),
            "{refused:?}"
        );
        let mut writes = guard.writes(&target);
        writes.node("/srv", Dir).unwrap_or_else(|e| panic!("{e}"));
        let refused = writes.node("/srv/dangling", File);
        assert!(
            matches!(
                refused,
                Err(RestoreRefused::ProtectedFolder { folder: "/etc", .. })
            ),
            "{refused:?}"
        );
        // Below a folder that does not exist yet, nothing is looked up.
        let mut writes = guard.writes(&target);
        for (path, kind) in [("/new", Dir), ("/new/a", Dir), ("/new/a/b", File)] {
            assert_eq!(writes.node(path, kind), Ok(()));
        }
    }
}
