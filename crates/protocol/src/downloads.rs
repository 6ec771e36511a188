//! The contract of snapshot downloads between server and agent, beside the
//! `download.start` message: the upload endpoint the agent posts to, the
//! headers that describe what it sends, and the body of a refusal.
//!
//! The data itself never travels in WebSocket frames: the agent streams
//! `restic dump`'s output as the body of one HTTP request to the server,
//! which hands that body on to the waiting browser. Flow control is then
//! TCP's, end to end (docs/downloads.md).

use serde::{Deserialize, Serialize};

/// Header of the upload saying what follows: [`KIND_FILE`], [`KIND_DIR`]
/// or [`KIND_ERROR`].
pub const KIND_HEADER: &str = "x-rm-download-kind";
/// Header of a file's upload: its size in bytes, as restic listed it.
pub const SIZE_HEADER: &str = "x-rm-download-size";

/// The body is the file's bytes as they are.
pub const KIND_FILE: &str = "file";
/// The body is an archive (tar or zip) of the folder.
pub const KIND_DIR: &str = "dir";
/// The body is a [`DownloadFailure`]: the agent could not produce the data.
pub const KIND_ERROR: &str = "error";

/// Largest [`DownloadFailure`] body the server reads.
pub const MAX_FAILURE_BYTES: usize = 16 * 1024;

/// The agent's upload endpoint for download `id`, below the server's base
/// URL.
pub fn upload_path(id: &str) -> String {
    format!("/agent/v1/downloads/{id}")
}

/// How a folder is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveFormat {
    /// A POSIX tar archive (restic's default).
    #[default]
    Tar,
    /// A zip archive.
    Zip,
}

impl ArchiveFormat {
    /// The name in URLs, in restic's `--archive` and as file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::Zip => "zip",
        }
    }

    /// The format named `value` (`tar` or `zip`).
    pub fn parse(value: &str) -> Result<ArchiveFormat, String> {
        match value {
            "tar" => Ok(ArchiveFormat::Tar),
            "zip" => Ok(ArchiveFormat::Zip),
            other => Err(format!("must be `tar` or `zip`, got `{other}`")),
        }
    }

    /// The media type of an archive in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "application/x-tar",
            ArchiveFormat::Zip => "application/zip",
        }
    }
}

/// Why the agent could not produce a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The snapshot or the path in it does not exist.
    NotFound,
    /// Anything else (no repository settings, restic failed, …).
    #[serde(other)]
    Failed,
}

/// The body of an upload with [`KIND_ERROR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadFailure {
    /// What kind of failure.
    pub code: FailureCode,
    /// restic's (or the agent's) words.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_only() {
        assert_eq!(ArchiveFormat::parse("tar"), Ok(ArchiveFormat::Tar));
        assert_eq!(ArchiveFormat::parse("zip"), Ok(ArchiveFormat::Zip));
        assert!(ArchiveFormat::parse("ZIP").is_err());
        assert!(ArchiveFormat::parse("--archive=zip").is_err());
    }

    #[test]
    fn an_unknown_failure_code_is_a_plain_failure() {
        let failure: DownloadFailure =
            serde_json::from_str(r#"{"code": "later_code", "message": "m"}"#).unwrap();
        assert_eq!(failure.code, FailureCode::Failed);
    }
}
