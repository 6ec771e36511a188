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
