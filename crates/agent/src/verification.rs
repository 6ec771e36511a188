//! The agent's side of rotating verification (DESIGN §10): which subset
//! of a repository's pack data its next `check --read-data-subset=n/N`
//! reads when the server does not say.
//!
//! Schedules fire on the agent while the server is away, so the agent keeps
//! its own cursor per repository in the state directory
//! (`verification.json`): it moves past a subset that passed and stays on
//! one that failed (rules in [`rm_core::verification::Cursor`]). A subset
//! the server chose moves the cursor the same way, so the agent carries on
//! from there once on its own. Repositories are keyed by the SHA-256 of
//! their URL, so the file holds no credentials a URL may carry.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rm_core::verification::Cursor;

use crate::state::StateDir;

/// The cursors of every repository this agent checks, in memory and (when
/// the agent has a state directory) on disk.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    dir: Option<StateDir>,
    /// `None` until read from disk.
    known: Mutex<Option<BTreeMap<String, Cursor>>>,
}

impl Cursors {
    /// Cursors kept in `dir`.
    pub(crate) fn in_dir(dir: StateDir) -> Cursors {
        Cursors {
            dir: Some(dir),
            known: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Cursor>) -> T) -> T {
        let mut known = match self.known.lock() {
            Ok(known) => known,
            Err(poisoned) => poisoned.into_inner(),
        };
        let map = known.get_or_insert_with(|| match &self.dir {
            Some(dir) => dir.load_cursors().unwrap_or_else(|e| {
                // A corrupt file costs a restart of the cycles, nothing more.
                tracing::warn!("rotating checks start their cycles over: {e}");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        });
        f(map)
    }

    /// The subset the next rotating check of the repository at `url`
    /// reads, in a cycle of `cycle` runs.
    pub(crate) fn next(&self, url: &str, cycle: u32) -> u32 {
        let key = Cursor::key(url);
        self.with(|map| Cursor::pick(map.get(&key).copied(), cycle))
    }

    /// Records that subset `subset` of `cycle` ran on the repository at
    /// `url`, and whether it passed.
    pub(crate) fn ran(&self, url: &str, cycle: u32, subset: u32, passed: bool) {
        let key = Cursor::key(url);
        let saved = self.with(|map| {
            map.insert(key, Cursor::after(cycle, subset, passed));
            match &self.dir {
                Some(dir) => dir.save_cursors(map).map(drop),
                None => Ok(()),
            }
        });
        if let Err(e) = saved {
            tracing::warn!("could not store where the rotating check stands: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_a_restart_and_keep_repositories_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let url = "rest:http://alice:s3cret@127.0.0.1:8000/repo/";
        let cursors = Cursors::in_dir(dir.clone());
        assert_eq!(cursors.next(url, 3), 1);
        cursors.ran(url, 3, 1, true);
        cursors.ran("/srv/other", 3, 2, false);
        // A new agent process reads the same file.
        let restarted = Cursors::in_dir(dir.clone());
        assert_eq!(restarted.next(url, 3), 2);
        assert_eq!(
            restarted.next("rest:http://alice:s3cret@127.0.0.1:8000/repo", 3),
            2
        );
        assert_eq!(restarted.next("/srv/other", 3), 2);
        // Another cycle length starts at the first subset.
        assert_eq!(restarted.next(url, 30), 1);
        let text =
            std::fs::read_to_string(dir.path().join(crate::state::VERIFICATION_FILE)).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("/srv/other"), "{text}");
    }

    #[test]
    fn a_corrupt_file_starts_over_instead_of_failing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        std::fs::write(tmp.path().join(crate::state::VERIFICATION_FILE), "{").unwrap();
        let cursors = Cursors::in_dir(dir);
        assert_eq!(cursors.next("/srv/repo", 3), 1);
        cursors.ran("/srv/repo", 3, 1, true);
        assert_eq!(cursors.next("/srv/repo", 3), 2);
    }
}
