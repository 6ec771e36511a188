//! Raising the open-file limit: every agent connection is a socket, and the
//! usual soft limit of 1024 descriptors would refuse agents long before the
//! server runs out of anything real.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The process's open-file limit after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (the hard limit, if raising worked).
    pub now: u64,
    /// The hard limit, the most an unprivileged process may set.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the server (and the
/// fleet benchmark's thousands of simulated agents) can hold as many sockets
/// as the system allows this process. Never lowers it.
pub fn raise_open_files_limit() -> Result<OpenFilesLimit, std::io::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok(OpenFilesLimit {
            before: soft,
            now: soft,
            hard,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    Ok(OpenFilesLimit {
        before: soft,
        now: hard,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_files_limit().unwrap();
        assert_eq!(limit.now, limit.hard);
        assert!(limit.now >= limit.before);
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, hard), (limit.now, limit.hard));
    }
}
