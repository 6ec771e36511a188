//! Agent upgrades: the platform names binaries are offered under and the
//! version order that decides whether an agent is older than its server.
//! Pure, so the server, the agent and the tests share one rule.

use std::cmp::Ordering;

/// The platform name of the machine this build runs on: `linux-<arch>`,
/// with the architecture spelled as the installer's `uname -m`
/// normalisation spells it (`linux-x86_64`, `linux-aarch64`, `linux-armv7`).
pub fn own_platform() -> String {
    platform_for(std::env::consts::ARCH)
}

/// `linux-<arch>` for Rust's name of an architecture.
pub fn platform_for(arch: &str) -> String {
    let arch = match arch {
        "arm" => "armv7",
        other => other,
    };
    format!("linux-{arch}")
}

/// Whether `name` can be a platform: `linux-` and a short lower-case
/// architecture. Only such names are looked up or put into URLs, so a
/// platform can never name a path.
pub fn is_platform(name: &str) -> bool {
    name.strip_prefix("linux-").is_some_and(|arch| {
        !arch.is_empty()
            && arch.len() <= 32
            && arch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// A release version, `MAJOR.MINOR.PATCH` with an optional `-pre-release`
/// (and `+build`, which does not take part in the order). Missing minor or
/// patch numbers read as 0 (`1.2` is `1.2.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    numbers: [u64; 3],
    pre: Vec<String>,
}

impl Version {
    /// Parses a version; `None` when it is not one (then nothing is
    /// older or newer than it, and no upgrade is offered).
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let text = text.split_once('+').map_or(text, |(v, _build)| v);
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let mut numbers = [0u64; 3];
        let mut parts = core.split('.');
        for (i, slot) in numbers.iter_mut().enumerate() {
            match parts.next() {
                Some(part) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => {
                    *slot = part.parse().ok()?;
                }
                None if i > 0 => break,
                _ => return None,
            }
        }
        if parts.next().is_some() {
            return None;
        }
        let pre = match pre {
            Some(pre) => {
                let ids: Vec<String> = pre.split('.').map(str::to_owned).collect();
                if ids.iter().any(|id| {
                    id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }) {
                    return None;
                }
                ids
            }
            None => Vec::new(),
        };
        Some(Version { numbers, pre })
    }
}

impl Ord for Version {
    /// Numbers first; then a release is newer than its pre-releases, and
    /// pre-releases compare identifier by identifier (numbers numerically,
    /// below words; words by their bytes; a longer list is newer), as
    /// semver says.
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let order = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(a), Ok(b)) => a.cmp(&b),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether version `a` is older than `b`; false when either is not a
/// version (an agent reporting something unreadable is never pushed a
/// binary by a guess).
pub fn is_older(a: &str, b: &str) -> bool {
    match (Version::parse(a), Version::parse(b)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_numerically() {
        assert!(is_older("0.9.0", "0.10.0"));
        assert!(is_older("0.0.1", "0.1.0"));
        assert!(is_older("1.2.3", "1.2.10"));
        assert!(!is_older("1.2.3", "1.2.3"));
        assert!(!is_older("2.0.0", "1.99.99"));
        assert!(is_older("1.2", "1.2.1"));
        assert!(!is_older("v1.2.0", "1.2"));
    }

    #[test]
    fn pre_releases_come_before_their_release() {
        assert!(is_older("1.0.0-rc.1", "1.0.0"));
        assert!(is_older("1.0.0-alpha", "1.0.0-alpha.1"));
        assert!(is_older("1.0.0-alpha.1", "1.0.0-beta"));
        assert!(is_older("1.0.0-rc.2", "1.0.0-rc.10"));
        assert!(is_older("1.0.0-1", "1.0.0-alpha"));
        assert!(is_older("0.9.9", "1.0.0-rc.1"));
        assert!(!is_older("1.0.0", "1.0.0-rc.1"));
        assert!(!is_older("1.0.0+build.5", "1.0.0"));
    }

    #[test]
    fn non_versions_are_never_older_or_newer() {
        for bad in [
            "",
            "abc",
            "1..2",
            "1.2.3.4",
            "1.x",
            "1.0.0-",
            "1.0.0-a..b",
            "-1.0",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad}");
            assert!(!is_older(bad, "9.9.9"), "{bad}");
            assert!(!is_older("0.0.1", bad), "{bad}");
        }
    }

    #[test]
    fn platforms_are_named_as_the_installer_names_them() {
        assert_eq!(platform_for("x86_64"), "linux-x86_64");
        assert_eq!(platform_for("aarch64"), "linux-aarch64");
        assert_eq!(platform_for("arm"), "linux-armv7");
        assert!(is_platform(&own_platform()));
        for bad in [
            "linux-",
            "linux-../x",
            "macos-x86_64",
            "linux-X86",
            "linux-a/b",
        ] {
            assert!(!is_platform(bad), "{bad}");
        }
    }
}
