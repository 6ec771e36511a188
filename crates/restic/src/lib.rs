//! The one place that runs the `restic` command-line program.
//!
//! Everything that spawns restic, reads its output or maps its exit codes
//! lives here, so the agent never builds a restic command line by hand and
//! version differences (0.14 on Debian bookworm up to current releases) are
//! handled in one crate. Today it only detects restic's version.

mod error;
mod version;

pub use error::ResticError;
pub use version::{
    detect_version, detect_version_with_timeout, parse_version_output, ResticVersion,
    VERSION_TIMEOUT,
};
