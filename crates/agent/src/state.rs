//! The agent's state directory: its enrolment (`agent.json`) and the last
//! configuration and schedules the server sent (`config.json`,
//! `schedules.json`), so the agent keeps working while the server is away,
//! and where its rotating checks stand (`verification.json`).
//!
//! These files hold secrets (the agent token, repository passwords and
//! backend keys), so the directory is created 0700 and every file 0600.
//! Files are replaced atomically (write a temporary file in the same
//! directory, fsync, rename, fsync the directory) so a crash or power cut
//! leaves either the old or the new version, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rm_core::verification::Cursor;
use rm_protocol::{ConfigUpdate, ScheduleSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::tls::TrustSettings;

/// The enrolment: which server, which host, and the agent's token.
pub const AGENT_FILE: &str = "agent.json";

/// The last `config.update` payload, verbatim (holds the repository password).
pub const CONFIG_FILE: &str = "config.json";

/// The last `schedule.set` payload, verbatim.
pub const SCHEDULES_FILE: &str = "schedules.json";

/// Last fire time per schedule, for catching up missed fires.
pub const FIRES_FILE: &str = "fires.json";

/// Where each repository's rotating check stands (see
/// `crate::verification`).
pub const VERIFICATION_FILE: &str = "verification.json";

/// Permission bits of the state directory: owner only.
pub const DIR_MODE: u32 = 0o700;

/// Permission bits of every state file: owner read/write only.
pub const FILE_MODE: u32 = 0o600;

/// The contents of `agent.json`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The server's base URL (`http://host:8080`, maybe with a path prefix).
    pub server_url: String,
    /// This host's id on the server.
    pub host_id: String,
    /// The bearer token for `/ws/agent`. Secret: never log it.
    pub agent_token: String,
    /// When this host enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// How to trust an https:// server (CA, pin, insecure), as enrolment
    /// was told; absent for plain http or the system's roots alone.
    #[serde(default, skip_serializing_if = "TrustSettings::is_default")]
    pub tls: TrustSettings,
    /// The host operator's opt-in, set by editing this file: restores may
    /// write onto `/` and into system folders (`/etc`, `/usr`, `/var/lib`,
    /// …). Never set by the server; kept when the host enrols again.
    #[serde(default)]
    pub allow_restore_to_system_paths: bool,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `{:?}` must never leak the token into a log.
        f.debug_struct("AgentState")
            .field("server_url", &self.server_url)
            .field("host_id", &self.host_id)
            .field("agent_token", &"<redacted>")
            .field("enrolled_at", &self.enrolled_at)
            .field("tls", &self.tls)
            .field(
                "allow_restore_to_system_paths",
                &self.allow_restore_to_system_paths,
            )
            .finish()
    }
}

/// A state directory on disk. Constructing one does no I/O; the directory
/// is created on the first write.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `agent.json` lives.
    pub fn agent_file(&self) -> PathBuf {
        self.path.join(AGENT_FILE)
    }

    /// Where `config.json` lives.
    pub fn config_file(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// Where `schedules.json` lives.
    pub fn schedules_file(&self) -> PathBuf {
        self.path.join(SCHEDULES_FILE)
    }

    /// Creates the directory (and missing parents) with mode 0700. An
    /// existing directory keeps its permissions, since an operator may have
    /// chosen them; see [`StateDir::warn_if_exposed`].
    pub fn create(&self) -> Result<(), AgentError> {
        match fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(self.io_error(
                "use",
                &self.path,
                std::io::Error::new(ErrorKind::AlreadyExists, "it exists and is not a directory"),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(&self.path)
                    .map_err(|e| self.io_error("create directory", &self.path, e))?;
                // The umask may have narrowed the mode; make it exactly 0700.
                fs::set_permissions(&self.path, Permissions::from_mode(DIR_MODE))
                    .map_err(|e| self.io_error("set permissions of", &self.path, e))
            }
            Err(e) => Err(self.io_error("inspect", &self.path, e)),
        }
    }

    /// Logs a warning when other users can get into the directory. The
    /// files themselves are 0600 either way; this is about file names and
    /// a defence in depth the operator may have undone by accident.
    pub fn warn_if_exposed(&self) {
        if let Ok(meta) = fs::metadata(&self.path) {
            if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %self.path.display(),
                    "the agent state directory is accessible to other users; consider `chmod 700` on it"
                );
            }
        }
    }

    /// Fails unless a file can be created in the directory, so enrolment
    /// finds out before it spends its single-use token.
    pub fn check_writable(&self) -> Result<(), AgentError> {
        tempfile::Builder::new()
            .prefix(".write-check.")
            .tempfile_in(&self.path)
            .map(drop)
            .map_err(|e| self.io_error("write to", &self.path, e))
    }

    /// Whether `agent.json` exists.
    pub fn is_enrolled(&self) -> bool {
        self.agent_file().exists()
    }

    /// Reads `agent.json`; a missing file means "not enrolled".
    pub fn load_agent(&self) -> Result<AgentState, AgentError> {
        let path = self.agent_file();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(AgentError::NotEnrolled { path })
            }
            Err(e) => return Err(self.io_error("read", &path, e)),
        };
        let corrupt = |source| AgentError::CorruptEnrollment {
            path: path.clone(),
            source,
        };
        let state: AgentState = serde_json::from_slice(&bytes).map_err(corrupt)?;
        for (field, value) in [
            ("server_url", &state.server_url),
            ("host_id", &state.host_id),
            ("agent_token", &state.agent_token),
        ] {
            if value.trim().is_empty() {
                return Err(corrupt(serde::de::Error::custom(format!(
                    "`{field}` is empty"
                ))));
            }
        }
        Ok(state)
    }

    /// Writes `agent.json` atomically (0600) and returns its path.
    pub fn save_agent(&self, state: &AgentState) -> Result<PathBuf, AgentError> {
        self.save_json(AGENT_FILE, "the enrolment", state)
    }

    /// Reads the cached `config.update`, if the server ever sent one.
    pub fn load_config(&self) -> Result<Option<ConfigUpdate>, AgentError> {
        self.load_optional(&self.config_file())
    }

    /// Caches a `config.update` atomically (0600).
    pub fn save_config(&self, config: &ConfigUpdate) -> Result<PathBuf, AgentError> {
        self.save_json(CONFIG_FILE, "the configuration", config)
    }

    /// Reads the cached `schedule.set`, if the server ever sent one.
    pub fn load_schedules(&self) -> Result<Option<ScheduleSet>, AgentError> {
        self.load_optional(&self.schedules_file())
    }

    /// Caches a `schedule.set` atomically (0600).
    pub fn save_schedules(&self, schedules: &ScheduleSet) -> Result<PathBuf, AgentError> {
        self.save_json(SCHEDULES_FILE, "the schedules", schedules)
    }

    /// The last fire time of each schedule (schedule id → time), so a
    /// restarted agent can tell which fires it missed.
    pub fn load_fires(&self) -> Result<BTreeMap<String, DateTime<Utc>>, AgentError> {
        Ok(self
            .load_optional(&self.path.join(FIRES_FILE))?
            .unwrap_or_default())
    }

    /// Stores the last fire times atomically (0600).
    pub fn save_fires(
        &self,
        fires: &BTreeMap<String, DateTime<Utc>>,
    ) -> Result<PathBuf, AgentError> {
        self.save_json(FIRES_FILE, "the schedule fire times", fires)
    }

    /// The rotating checks' cursors, by repository (see
    /// `crate::verification`); none when the file does not exist.
    pub fn load_cursors(&self) -> Result<BTreeMap<String, Cursor>, AgentError> {
        Ok(self
            .load_optional(&self.path.join(VERIFICATION_FILE))?
            .unwrap_or_default())
    }

    /// Stores the rotating checks' cursors atomically (0600).
    pub fn save_cursors(&self, cursors: &BTreeMap<String, Cursor>) -> Result<PathBuf, AgentError> {
        self.save_json(VERIFICATION_FILE, "the rotating checks' cursors", cursors)
    }

    /// Deletes what an earlier enrolment cached (`config.json`,
    /// `schedules.json`), so a host re-enrolled elsewhere never runs the old
    /// server's schedules against the old repository.
    pub fn clear_cache(&self) -> Result<(), AgentError> {
        for path in [
            self.config_file(),
            self.schedules_file(),
            self.path.join(FIRES_FILE),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("remove", &path, e)),
            }
        }
        Ok(())
    }

    fn load_optional<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, AgentError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("read", path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AgentError::CorruptState {
                path: path.to_path_buf(),
                source,
            })
    }

    fn save_json<T: Serialize>(
        &self,
        name: &str,
        what: &'static str,
        value: &T,
    ) -> Result<PathBuf, AgentError> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|source| AgentError::Encode { what, source })?;
        bytes.push(b'\n');
        self.create()?;
        let path = self.path.join(name);
        self.write_atomic(&path, &bytes)?;
        Ok(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(FILE_MODE))
            .tempfile_in(&self.path)
            .map_err(|e| self.io_error("create a temporary file in", &self.path, e))?;
        let tmp_path = tmp.path().to_path_buf();
        // The umask may have narrowed the mode; make it exactly 0600.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| self.io_error("set permissions of", &tmp_path, e))?;
        tmp.write_all(bytes)
            .map_err(|e| self.io_error("write", &tmp_path, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| self.io_error("flush", &tmp_path, e))?;
        tmp.persist(path)
            .map_err(|e| self.io_error("replace", path, e.error))?;
        // Without this the rename itself may not survive a power cut.
        fs::File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error("flush directory", &self.path, e))
    }

    fn io_error(&self, action: &'static str, path: &Path, source: std::io::Error) -> AgentError {
        AgentError::StateIo {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_protocol::{AgentSettings, JobKind, RepositoryConfig, Schedule};

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    fn sample() -> AgentState {
        AgentState {
            server_url: "http://127.0.0.1:8080".into(),
            host_id: "01HOSTID".into(),
            agent_token: "rma_secret".into(),
            enrolled_at: Utc::now(),
            tls: TrustSettings::default(),
            allow_restore_to_system_paths: false,
        }
    }

    #[test]
    fn agent_state_round_trips_with_private_permissions() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path().join("nested/state"));
        let state = sample();
        let path = dir.save_agent(&state).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path, dir.agent_file());
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let loaded = dir.load_agent().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded, state);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(AGENT_FILE)]);
    }

    #[test]
    fn overwriting_tightens_a_loosened_file() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path());
        let path = dir.save_agent(&sample()).unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        dir.save_agent(&sample()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("rma_secret"), "{text}");
    }

    #[test]
    fn missing_enrolment_names_the_file_and_the_fix() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path());
        match dir.load_agent() {
            Err(e @ AgentError::NotEnrolled { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&dir.agent_file().display().to_string()),
                    "{text}"
                );
                assert!(text.contains("restic-manager agent enroll"), "{text}");
            }
            other => panic!("expected NotEnrolled, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_enrolment_is_reported_not_panicked() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path());
        for contents in [
            "{not json",
            "{}",
            r#"{"server_url":"http://x","host_id":"h","agent_token":"","enrolled_at":"2024-01-01T00:00:00Z"}"#,
        ] {
            fs::write(dir.agent_file(), contents).unwrap_or_else(|e| panic!("{e}"));
            match dir.load_agent() {
                Err(e @ AgentError::CorruptEnrollment { .. }) => {
                    assert!(e.to_string().contains("agent.json"), "{e}")
                }
                other => panic!("{contents}: expected CorruptEnrollment, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_and_schedules_round_trip_privately() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path().join("state"));
        assert!(matches!(dir.load_config(), Ok(None)));
        assert!(matches!(dir.load_schedules(), Ok(None)));

        let config = ConfigUpdate {
            repository: Some(RepositoryConfig {
                url: "/srv/repo".into(),
                password: "hunter2".into(),
                env: [("AWS_ACCESS_KEY_ID".to_owned(), "AKIA".to_owned())].into(),
                copy_to: None,
            }),
            settings: AgentSettings {
                heartbeat_seconds: 5,
            },
        };
        let schedules = ScheduleSet {
            version: 3,
            schedules: vec![Schedule {
                id: "01SCHED".into(),
                kind: JobKind::Backup,
                cron: "0 3 * * *".into(),
                timezone: None,
                params: serde_json::json!({"paths": ["/etc"]}),
                enabled: true,
                jitter_seconds: 60,
            }],
        };
        let config_path = dir.save_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let schedules_path = dir
            .save_schedules(&schedules)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&config_path), 0o600);
        assert_eq!(mode(&schedules_path), 0o600);
        assert_eq!(dir.load_config().ok().flatten(), Some(config));
        assert_eq!(dir.load_schedules().ok().flatten(), Some(schedules));
    }

    #[test]
    fn corrupt_cache_is_an_error_not_a_panic() {
        let tmp = temp();
        let dir = StateDir::new(tmp.path());
        fs::write(dir.schedules_file(), "[").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            dir.load_schedules(),
            Err(AgentError::CorruptState { .. })
        ));
    }

    #[test]
    fn a_file_in_the_way_of_the_directory_is_reported() {
        let tmp = temp();
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
        let dir = StateDir::new(&file);
        assert!(matches!(
            dir.save_agent(&sample()),
            Err(AgentError::StateIo { .. })
        ));
    }
}
