//! Typed ULID identifiers, so a host id can never be passed where a user id
//! is expected. ULIDs sort by creation time, which keeps listings ordered.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Ulid);

        impl $name {
            /// A fresh id.
            pub fn new() -> Self {
                $name(Ulid::new())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ulid::DecodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ulid::from_string(s).map($name)
            }
        }
    };
}

ulid_id!(
    /// A host (one enrolled machine, one agent).
    HostId
);
ulid_id!(
    /// An operator account.
    UserId
);
ulid_id!(
    /// The public half of a secret token (agent, enrolment, API or session).
    TokenId
);
ulid_id!(
    /// A job (one restic run on one host). Agents mint these too, for jobs
    /// they run on their own while the server is away.
    JobId
);
ulid_id!(
    /// A backup, retention or check schedule of one host.
    ScheduleId
);
ulid_id!(
    /// A fleet policy: what every host whose labels match it gets.
    PolicyId
);
ulid_id!(
    /// A batch of jobs started together on a selection of hosts
    /// (`POST /api/v1/jobs`).
    BatchId
);
ulid_id!(
    /// An alert: one spell of one condition on one host (DESIGN §7).
    AlertId
);
ulid_id!(
    /// A silence: notifications for matching hosts held back until a time.
    SilenceId
);
ulid_id!(
    /// A notification channel (webhook, ntfy, email, …).
    ChannelId
);
ulid_id!(
    /// One download of a file or folder from a snapshot
    /// (`GET /api/v1/hosts/{id}/snapshots/{sid}/download`): the one-time
    /// name under which the agent uploads it to the server.
    DownloadId
);
ulid_id!(
    /// An RPC request from the server to an agent (the envelope `id` of
    /// `tree.list`), echoed in its reply.
    RequestId
);

/// A restic snapshot id as the agent and restic accept it: 8 (restic's
/// short id) to 64 (the full id) hex characters. Anything else — `latest`,
/// a flag such as `-r`, a path — is refused, so a snapshot id can never
/// be read by restic as something other than an id, nor name a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

/// Why a string is not a [`SnapshotId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a snapshot id (8 to 64 hex characters)")]
pub struct SnapshotIdError {
    /// The value, quoted and cut to a readable length.
    shown: String,
}

impl SnapshotId {
    /// Shortest id restic accepts (its short id).
    pub const MIN_LEN: usize = 8;
    /// A full snapshot id.
    pub const MAX_LEN: usize = 64;

    /// The id as given (hex, 8 to 64 characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = SnapshotIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && (Self::MIN_LEN..=Self::MAX_LEN).contains(&s.len()) {
            Ok(SnapshotId(s.to_owned()))
        } else {
            // The value may be hostile (megabytes, control characters):
            // show a bounded, escaped prefix.
            let mut shown = format!("{:?}", s.chars().take(80).collect::<String>());
            if s.chars().count() > 80 {
                shown.push('…');
            }
            Err(SnapshotIdError { shown })
        }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = SnapshotIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_8_to_64_hex_characters() {
        for good in ["0123abcd", "ABCDEF01", &"a".repeat(64)] {
            assert_eq!(
                good.parse::<SnapshotId>().map(|s| s.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in [
            "",
            "latest",
            "-r",
            "0123abc",
            "0123abcg",
            "../../x",
            "/etc/passwd",
            "0123abcd\0",
            &"a".repeat(65),
        ] {
            let refused = bad.parse::<SnapshotId>().unwrap_err().to_string();
            assert!(refused.contains("not a snapshot id"), "{refused}");
        }
        let long = "x"
            .repeat(100_000)
            .parse::<SnapshotId>()
            .unwrap_err()
            .to_string();
        assert!(long.len() < 200, "{long}");
        let json: Result<SnapshotId, _> = serde_json::from_str("\"../x\"");
        assert!(json.is_err());
    }

    #[test]
    fn ulid_ids_refuse_anything_but_a_ulid() {
        for bad in [
            "",
            "01JOB",
            "../../etc/x",
            "/etc/x",
            "01HZZZZZZZZZZZZZZZZZZZZZZ\0",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?}");
        }
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
    }
}
