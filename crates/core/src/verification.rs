//! Rotating verification (DESIGN §10): the pure rules of a cycle of
//! `restic check --read-data-subset=n/N` runs, shared by the server (which
//! keeps one record per repository and picks the subset it dispatches), the
//! stores (which apply a run to the record inside one transaction) and the
//! agent (which keeps a cursor for the runs it starts while the server is
//! away).
//!
//! A cycle of `N` runs reads all of a repository's pack data once: run `n`
//! reads subset `n/N`. A subset that passed counts for the cycle; one that
//! failed keeps its place (it is the next to run again) and is remembered
//! with its error. Once all `N` passed, coverage is complete, and the next
//! passing run starts a new cycle. Nothing here does I/O.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

/// How one rotating check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// restic read the subset and found no errors.
    Passed,
    /// The check failed (errors found, or it could not run); the text
    /// says why.
    Failed(String),
}

/// One rotating check's end, as the record takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRun {
    /// Runs in the cycle the check belonged to.
    pub cycle: u32,
    /// The subset it read (`None`: it failed before one was chosen).
    pub subset: Option<u32>,
    /// When it ended; orders runs, so an old report replayed late changes
    /// nothing.
    pub finished_at: DateTime<Utc>,
    /// Whether it passed.
    pub outcome: RunOutcome,
}

/// Where a repository stands in its rotating verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationCycle {
    /// Runs in the current cycle.
    pub cycle: u32,
    /// The subsets that passed in the current cycle.
    pub subsets_done: BTreeSet<u32>,
    /// When the first subset of the current cycle passed.
    pub cycle_started_at: Option<DateTime<Utc>>,
    /// Why the latest failed run failed, until its subset passes (any
    /// subset, when it failed before one was chosen) or the cycle's length
    /// changes.
    pub last_error: Option<String>,
    /// The subset that failed (`None` when none did, or the failure came
    /// before a subset was chosen).
    pub failed_subset: Option<u32>,
    /// The subset the latest run read.
    pub last_subset: Option<u32>,
    /// When the latest run that counted ended.
    pub last_run_at: Option<DateTime<Utc>>,
}

impl VerificationCycle {
    /// A cycle of `cycle` runs of which none ran yet.
    pub fn new(cycle: u32) -> VerificationCycle {
        VerificationCycle {
            cycle,
            subsets_done: BTreeSet::new(),
            cycle_started_at: None,
            last_error: None,
            failed_subset: None,
            last_subset: None,
            last_run_at: None,
        }
    }

    /// Whether every subset of the cycle passed.
    pub fn is_complete(&self) -> bool {
        self.cycle > 0 && self.subsets_done.len() as u64 >= u64::from(self.cycle)
    }

    /// The share of the data read and verified this cycle, 0.0 to 1.0.
    pub fn coverage(&self) -> f64 {
        if self.cycle == 0 {
            return 0.0;
        }
        (self.subsets_done.len() as f64 / f64::from(self.cycle)).min(1.0)
    }

    /// [`VerificationCycle::coverage`] as a whole percentage, rounded
    /// down: 100 only when the cycle is complete.
    pub fn percent(&self) -> u32 {
        if self.cycle == 0 {
            return 0;
        }
        let done = self.subsets_done.len() as u64;
        (done.min(u64::from(self.cycle)) * 100 / u64::from(self.cycle)) as u32
    }

    /// The subset the next run of a cycle of `cycle` runs should read: the
    /// one that failed (it keeps its place), else the lowest not yet
    /// passed, else (a complete cycle, or another length) the first.
    pub fn next_subset(&self, cycle: u32) -> u32 {
        if cycle != self.cycle || self.is_complete() {
            return 1;
        }
        if let Some(failed) = self.failed_subset {
            if (1..=cycle).contains(&failed) && !self.subsets_done.contains(&failed) {
                return failed;
            }
        }
        (1..=cycle)
            .find(|n| !self.subsets_done.contains(n))
            .unwrap_or(1)
    }

    /// Takes a run into the record; returns whether anything changed. A
    /// run that ended before the current cycle started, a replay of the
    /// run that completed it, or one naming a subset outside its cycle
    /// changes nothing, so applying a run twice is applying it once.
    pub fn apply(&mut self, run: &VerificationRun) -> bool {
        if run.cycle == 0 || run.subset.is_some_and(|n| n == 0 || n > run.cycle) {
            return false;
        }
        // A pass that says not which subset it read proves nothing.
        if run.outcome == RunOutcome::Passed && run.subset.is_none() {
            return false;
        }
        if self
            .cycle_started_at
            .is_some_and(|started| run.finished_at < started)
        {
            return false;
        }
        let before = self.clone();
        if run.cycle != self.cycle {
            *self = VerificationCycle::new(run.cycle);
        }
        match (&run.outcome, run.subset) {
            (RunOutcome::Passed, Some(n)) => {
                if self.is_complete() {
                    let newer = self.last_run_at.is_none_or(|last| run.finished_at > last);
                    if !newer {
                        return false;
                    }
                    self.subsets_done.clear();
                    self.cycle_started_at = None;
                }
                if self.subsets_done.is_empty() {
                    self.cycle_started_at = Some(run.finished_at);
                }
                self.subsets_done.insert(n);
                // A failure before a subset was chosen (restic could not
                // start) is answered by any pass.
                if self.failed_subset.is_none_or(|failed| failed == n) {
                    self.failed_subset = None;
                    self.last_error = None;
                }
            }
            (RunOutcome::Passed, None) => return false,
            (RunOutcome::Failed(error), subset) => {
                self.last_error = Some(error.clone());
                self.failed_subset = subset;
            }
        }
        if let Some(n) = run.subset {
            self.last_subset = Some(n);
        }
        if self.last_run_at.is_none_or(|last| run.finished_at > last) {
            self.last_run_at = Some(run.finished_at);
        }
        *self != before
    }
}

/// An agent's position in a repository's cycle: the subset its next
/// rotating check reads when the server does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The cycle the cursor belongs to.
    pub cycle: u32,
    /// The subset to read next, 1 to `cycle`.
    pub next: u32,
}

impl Cursor {
    /// The key an agent files a repository's cursor under: the SHA-256 (hex)
    /// of its URL, trailing slashes ignored as they name the same
    /// repository, so the file holds no credentials a URL may carry.
    pub fn key(url: &str) -> String {
        use sha2::Digest;
        let url = url.trim();
        let url = match url.trim_end_matches('/') {
            "" => url,
            trimmed => trimmed,
        };
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    }

    /// The subset to read in a cycle of `cycle` runs, from the stored
    /// cursor: its `next` when it belongs to that cycle, else the first.
    pub fn pick(stored: Option<Cursor>, cycle: u32) -> u32 {
        match stored {
            Some(c) if c.cycle == cycle && (1..=cycle).contains(&c.next) => c.next,
            _ => 1,
        }
    }

    /// The cursor after subset `subset` of `cycle` ran: past it when it
    /// passed, on it when it failed (a failed subset keeps its place).
    pub fn after(cycle: u32, subset: u32, passed: bool) -> Cursor {
        let next = if passed {
            subset % cycle.max(1) + 1
        } else {
            subset
        };
        Cursor { cycle, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap()
    }

    fn passed(cycle: u32, n: u32, minute: u32) -> VerificationRun {
        VerificationRun {
            cycle,
            subset: Some(n),
            finished_at: at(minute),
            outcome: RunOutcome::Passed,
        }
    }

    fn failed(cycle: u32, n: Option<u32>, minute: u32) -> VerificationRun {
        VerificationRun {
            cycle,
            subset: n,
            finished_at: at(minute),
            outcome: RunOutcome::Failed(String::from("Pack ID does not match")),
        }
    }

    #[test]
    fn three_passing_runs_of_a_cycle_of_three_cover_everything() {
        let mut record = VerificationCycle::new(3);
        assert_eq!(record.next_subset(3), 1);
        for (n, minute) in [(1, 1), (2, 2), (3, 3)] {
            assert_eq!(record.next_subset(3), n);
            assert!(record.apply(&passed(3, n, minute)));
        }
        assert!(record.is_complete());
        assert_eq!(record.coverage(), 1.0);
        assert_eq!(record.percent(), 100);
        assert_eq!(record.cycle_started_at, Some(at(1)));
        assert_eq!(record.subsets_done, BTreeSet::from([1, 2, 3]));
        // The next pass starts a new cycle.
        assert_eq!(record.next_subset(3), 1);
        assert!(record.apply(&passed(3, 1, 4)));
        assert_eq!(record.subsets_done, BTreeSet::from([1]));
        assert_eq!(record.cycle_started_at, Some(at(4)));
        assert_eq!(record.percent(), 33);
    }

    #[test]
    fn a_failed_subset_keeps_its_place_until_it_passes() {
        let mut record = VerificationCycle::new(3);
        record.apply(&passed(3, 1, 1));
        assert!(record.apply(&failed(3, Some(2), 2)));
        assert_eq!(record.subsets_done, BTreeSet::from([1]));
        assert_eq!(record.last_error.as_deref(), Some("Pack ID does not match"));
        assert_eq!(record.next_subset(3), 2);
        // Another subset passing (an agent's own pick) leaves the error.
        record.apply(&passed(3, 3, 3));
        assert_eq!(record.next_subset(3), 2);
        assert!(record.last_error.is_some());
        record.apply(&passed(3, 2, 4));
        assert_eq!(record.last_error, None);
        assert!(record.is_complete());
    }

    #[test]
    fn replays_and_old_reports_change_nothing() {
        let mut record = VerificationCycle::new(3);
        for (n, minute) in [(1, 1), (2, 2), (3, 3)] {
            record.apply(&passed(3, n, minute));
        }
        let complete = record.clone();
        // The run that completed the cycle, reported again.
        assert!(!record.apply(&passed(3, 3, 3)));
        assert_eq!(record, complete);
        record.apply(&passed(3, 1, 5));
        let new_cycle = record.clone();
        // A run of the old cycle arriving late.
        assert!(!record.apply(&passed(3, 2, 2)));
        assert!(!record.apply(&failed(3, Some(2), 2)));
        // The same pass twice counts once.
        assert!(!record.apply(&passed(3, 1, 5)));
        assert_eq!(record, new_cycle);
    }

    #[test]
    fn another_cycle_length_starts_over() {
        let mut record = VerificationCycle::new(3);
        record.apply(&passed(3, 1, 1));
        record.apply(&failed(3, Some(2), 2));
        assert_eq!(record.next_subset(5), 1);
        assert!(record.apply(&passed(5, 1, 3)));
        assert_eq!(record.cycle, 5);
        assert_eq!(record.subsets_done, BTreeSet::from([1]));
        assert_eq!(record.last_error, None);
        assert_eq!(record.percent(), 20);
    }

    #[test]
    fn nonsense_runs_are_ignored() {
        let mut record = VerificationCycle::new(3);
        assert!(!record.apply(&passed(3, 0, 1)));
        assert!(!record.apply(&passed(3, 4, 1)));
        assert!(!record.apply(&passed(0, 1, 1)));
        assert!(!record.apply(&VerificationRun {
            subset: None,
            ..passed(3, 1, 1)
        }));
        assert_eq!(record, VerificationCycle::new(3));
        // A failure before a subset was chosen is still an error to show,
        // until any subset passes.
        assert!(record.apply(&failed(3, None, 2)));
        assert_eq!(record.next_subset(3), 1);
        assert!(record.last_error.is_some());
        assert!(record.apply(&passed(3, 1, 3)));
        assert_eq!(record.last_error, None);
    }

    #[test]
    fn a_cursor_moves_past_a_pass_and_stays_on_a_failure() {
        assert_eq!(Cursor::pick(None, 3), 1);
        let after_one = Cursor::after(3, 1, true);
        assert_eq!(Cursor::pick(Some(after_one), 3), 2);
        assert_eq!(Cursor::pick(Some(Cursor::after(3, 2, false)), 3), 2);
        assert_eq!(Cursor::pick(Some(Cursor::after(3, 3, true)), 3), 1);
        // A cursor of another cycle, or out of range, starts over.
        assert_eq!(Cursor::pick(Some(after_one), 30), 1);
        assert_eq!(Cursor::pick(Some(Cursor { cycle: 3, next: 9 }), 3), 1);
        assert_eq!(Cursor::after(1, 1, true), Cursor { cycle: 1, next: 1 });
        assert_eq!(Cursor::key("/srv/repo/"), Cursor::key("/srv/repo"));
        assert_ne!(Cursor::key("/srv/repo"), Cursor::key("/srv/repo2"));
        assert_eq!(Cursor::key("/").len(), 64);
    }
}
