//! Slowing down guessing: the login limiter (per user and address, and per
//! user across addresses) and the cheap per-address limit on failed
//! bearer-token checks.
//!
//! The login limiter reserves a slot *before* a password is verified, so a
//! burst of parallel attempts is throttled exactly like the same attempts
//! sent one after another. Its tables are bounded, and a full table never
//! forgets a record that is limiting someone: it refuses new names instead
//! (fail closed), as it does when its lock is poisoned.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The login limiter's rules.
#[derive(Debug, Clone)]
pub(crate) struct LoginLimits {
    /// Failed logins allowed per (user name, address) within `pair_window`.
    pub(crate) pair_failures: usize,
    /// How long a failure counts against a (user name, address).
    pub(crate) pair_window: Duration,
    /// Failed logins for a user name, from any address, before every
    /// further attempt for it has to wait.
    pub(crate) user_free_failures: u32,
    /// The wait after the first failure beyond `user_free_failures`; it
    /// doubles with every further failure…
    pub(crate) user_base_delay: Duration,
    /// …up to this, so the real user is slowed down, never locked out.
    pub(crate) user_max_delay: Duration,
    /// A user name's failures are forgotten this long after its last one.
    pub(crate) user_window: Duration,
    /// Most records kept in each table (pairs, user names).
    pub(crate) max_tracked: usize,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            pair_failures: 5,
            pair_window: Duration::from_secs(15 * 60),
            user_free_failures: 10,
            user_base_delay: Duration::from_secs(1),
            user_max_delay: Duration::from_secs(5 * 60),
            user_window: Duration::from_secs(15 * 60),
            max_tracked: 10_000,
        }
    }
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Too many failures for this user name from this address.
    Pair,
    /// Too many failures for this user name from anywhere: it must wait.
    User,
}

/// Why an attempt may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A limit is reached; try again after `retry_after`.
    Throttled {
        /// Which limit.
        scope: Scope,
        /// How long until an attempt may be checked again.
        retry_after: Duration,
    },
    /// The limiter cannot decide (its lock is poisoned, or its tables are
    /// full of records that are limiting someone): nothing is checked.
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

/// When a limiter that cannot decide suggests trying again.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(60);

/// How long an attempt waits while others for the same name are being
/// checked (a check takes well under a second).
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct PairRecord {
    /// Failures still in the window, oldest first.
    failures: VecDeque<Instant>,
    /// Attempts reserved and being checked now.
    pending: usize,
}

#[derive(Default)]
struct UserRecord {
    failures: u32,
    last_failure: Option<Instant>,
    pending: usize,
}

#[derive(Default)]
struct Tables {
    pairs: HashMap<(String, IpAddr), PairRecord>,
    users: HashMap<String, UserRecord>,
}

/// Login attempts per (user name, address) and per user name.
pub(crate) struct LoginLimiter {
    limits: LoginLimits,
    tables: Mutex<Tables>,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter::new(LoginLimits::default())
    }
}

impl LoginLimiter {
    /// A limiter with `limits`.
    pub(crate) fn new(limits: LoginLimits) -> LoginLimiter {
        LoginLimiter {
            limits,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Tables>> {
        // A poisoned lock means a panic mid-update: the counts may be
        // wrong, so the limiter refuses rather than guesses.
        self.tables.lock().ok()
    }

    /// Reserves an attempt for `user` from `address` at `now`, before the
    /// password is checked. The reservation must end in
    /// [`Reservation::succeeded`], [`Reservation::failed`] or
    /// [`Reservation::release`]; dropped otherwise, it counts as a failure.
    pub(crate) fn begin(
        &self,
        user: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<Reservation<'_>, Refusal> {
        let unavailable = Refusal::Unavailable {
            retry_after: UNAVAILABLE_RETRY,
        };
        let mut tables = self.lock().ok_or(unavailable)?;
        let tables = &mut *tables;
        let pair_key = (user.to_owned(), address);
        let limits = &self.limits;

        if let Some(pair) = tables.pairs.get_mut(&pair_key) {
            prune_pair(pair, limits, now);
            if pair.failures.len() + pair.pending >= limits.pair_failures {
                let retry_after = if pair.failures.len() >= limits.pair_failures {
                    pair.failures
                        .front()
                        .map(|oldest| {
                            limits
                                .pair_window
                                .saturating_sub(now.saturating_duration_since(*oldest))
                        })
                        .unwrap_or(IN_FLIGHT_RETRY)
                } else {
                    IN_FLIGHT_RETRY
                };
                return Err(Refusal::Throttled {
                    scope: Scope::Pair,
                    retry_after: retry_after.max(Duration::from_secs(1)),
                });
            }
        }
        if let Some(record) = tables.users.get_mut(user) {
            if user_expired(record, limits, now) {
                record.failures = 0;
                record.last_failure = None;
            }
            if let Some(retry_after) = user_wait(record, limits, now) {
                return Err(Refusal::Throttled {
                    scope: Scope::User,
                    retry_after,
                });
            }
        }

        // Room for both records first, so a refusal changes nothing.
        if !tables.pairs.contains_key(&pair_key)
            && !make_room(&mut tables.pairs, limits, now, pair_evictable, pair_expired)
        {
            return Err(unavailable);
        }
        if !tables.users.contains_key(user)
            && !make_room(&mut tables.users, limits, now, user_evictable, user_expired)
        {
            return Err(unavailable);
        }
        tables.pairs.entry(pair_key.clone()).or_default().pending += 1;
        tables.users.entry(user.to_owned()).or_default().pending += 1;
        Ok(Reservation {
            limiter: self,
            pair: pair_key,
            done: false,
        })
    }

    /// Ends a reservation: `failed_at` is when the check failed (a failure
    /// is counted), `None` a success (the pair and the user name start
    /// afresh), or `release` only returns the slot.
    fn finish(&self, key: &(String, IpAddr), outcome: Outcome) {
        // Poisoned: nothing to update; `begin` refuses from now on anyway.
        let Some(mut tables) = self.lock() else {
            return;
        };
        if let Some(pair) = tables.pairs.get_mut(key) {
            pair.pending = pair.pending.saturating_sub(1);
            match outcome {
                Outcome::Failed(at) => pair.failures.push_back(at),
                Outcome::Succeeded => pair.failures.clear(),
                Outcome::Released => {}
            }
        }
        if let Some(user) = tables.users.get_mut(&key.0) {
            user.pending = user.pending.saturating_sub(1);
            match outcome {
                Outcome::Failed(at) => {
                    user.failures = user.failures.saturating_add(1);
                    user.last_failure = Some(at);
                }
                Outcome::Succeeded => {
                    user.failures = 0;
                    user.last_failure = None;
                }
                Outcome::Released => {}
            }
        }
    }

    /// Records tracked now (pairs, user names).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        self.lock()
            .map(|t| (t.pairs.len(), t.users.len()))
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Failed(Instant),
    Succeeded,
    Released,
}

/// A reserved login attempt; see [`LoginLimiter::begin`].
pub(crate) struct Reservation<'a> {
    limiter: &'a LoginLimiter,
    pair: (String, IpAddr),
    done: bool,
}

impl Reservation<'_> {
    /// The password was right: the pair and the user name start afresh.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        self.limiter.finish(&self.pair, Outcome::Succeeded);
    }

    /// The password (or user name) was wrong at `at`.
    pub(crate) fn failed(mut self, at: Instant) {
        self.done = true;
        self.limiter.finish(&self.pair, Outcome::Failed(at));
    }

    /// Nothing was checked (the store failed first): only the slot returns.
    pub(crate) fn release(mut self) {
        self.done = true;
        self.limiter.finish(&self.pair, Outcome::Released);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // An attempt abandoned mid-check (the request was cancelled) counts
        // as a failure: never fewer failures than checks.
        if !self.done {
            self.limiter
                .finish(&self.pair, Outcome::Failed(Instant::now()));
        }
    }
}

/// How telling a record is when the table is full: failures, then the
/// latest failure; the lowest is forgotten first.
type Rank = (u64, Option<Instant>);

fn prune_pair(pair: &mut PairRecord, limits: &LoginLimits, now: Instant) {
    while pair
        .failures
        .front()
        .is_some_and(|at| now.saturating_duration_since(*at) >= limits.pair_window)
    {
        pair.failures.pop_front();
    }
}

fn pair_expired(pair: &mut PairRecord, limits: &LoginLimits, now: Instant) -> bool {
    prune_pair(pair, limits, now);
    pair.pending == 0 && pair.failures.is_empty()
}

/// Whether forgetting this pair frees nobody: nothing in flight and below
/// its limit.
fn pair_evictable(pair: &PairRecord, limits: &LoginLimits) -> Option<Rank> {
    (pair.pending == 0 && pair.failures.len() < limits.pair_failures)
        .then(|| (pair.failures.len() as u64, pair.failures.back().copied()))
}

fn user_expired(user: &mut UserRecord, limits: &LoginLimits, now: Instant) -> bool {
    let stale = user
        .last_failure
        .is_none_or(|at| now.saturating_duration_since(at) >= limits.user_window);
    user.pending == 0 && stale
}

fn user_evictable(user: &UserRecord, limits: &LoginLimits) -> Option<Rank> {
    (user.pending == 0 && user.failures < limits.user_free_failures)
        .then_some((u64::from(user.failures), user.last_failure))
}

/// How long `user` must wait before another attempt, if at all.
fn user_wait(user: &UserRecord, limits: &LoginLimits, now: Instant) -> Option<Duration> {
    let used = u64::from(user.failures) + user.pending as u64;
    if used < u64::from(limits.user_free_failures) {
        return None;
    }
    // Beyond the free failures attempts go one at a time: otherwise a
    // burst from many addresses would all pass the same delay at once.
    if user.pending > 0 {
        return Some(IN_FLIGHT_RETRY);
    }
    let beyond = user.failures.saturating_sub(limits.user_free_failures);
    let delay = user_delay(limits, beyond + 1);
    let since = user
        .last_failure
        .map(|at| now.saturating_duration_since(at))
        .unwrap_or(Duration::MAX);
    let wait = delay.saturating_sub(since);
    // Round up to whole seconds: Retry-After counts seconds, and a client
    // that waits what it was told must not be refused again.
    (!wait.is_zero())
        .then(|| Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)))
}

/// The wait before attempt `n` (1-based) beyond the free failures:
/// base · 2^(n-1), capped.
fn user_delay(limits: &LoginLimits, n: u32) -> Duration {
    let factor = 2u32.checked_pow(n.saturating_sub(1)).unwrap_or(u32::MAX);
    limits
        .user_base_delay
        .checked_mul(factor)
        .unwrap_or(limits.user_max_delay)
        .min(limits.user_max_delay)
}

/// Makes room for one more record: forgets expired ones, then, if still
/// full, the least telling record that limits nobody (fewest failures,
/// then oldest). False when every record is limiting someone: the caller
/// refuses rather than wipe a record an attacker would like gone.
fn make_room<K: Clone + std::hash::Hash + Eq, V>(
    table: &mut HashMap<K, V>,
    limits: &LoginLimits,
    now: Instant,
    evictable: fn(&V, &LoginLimits) -> Option<Rank>,
    expired: fn(&mut V, &LoginLimits, Instant) -> bool,
) -> bool {
    if table.len() < limits.max_tracked {
        return true;
    }
    table.retain(|_, record| !expired(record, limits, now));
    if table.len() < limits.max_tracked {
        return true;
    }
    let victim = table
        .iter()
        .filter_map(|(key, record)| evictable(record, limits).map(|rank| (rank, key)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, key)| key.clone());
    match victim {
        Some(key) => {
            table.remove(&key);
            true
        }
        None => false,
    }
}

/// Failed bearer-token checks allowed per address within
/// [`TOKEN_FAILURE_WINDOW`] before further failures are answered with 429.
const TOKEN_FAILURES: u32 = 30;
/// The fixed window failed bearer-token checks are counted in.
const TOKEN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked for failed bearer-token checks.
const TOKEN_MAX_TRACKED: usize = 10_000;

/// Failed bearer-token checks per address. Tokens carry 256 random bits,
/// so guessing one is hopeless at any rate; this only tells a scanner or a
/// misconfigured client to back off. It is consulted after a token failed,
/// never before one is checked, so a correct token is never slowed.
#[derive(Default)]
pub(crate) struct TokenFailures {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl TokenFailures {
    /// Counts a failed check from `address` at `now`; `Some(retry_after)`
    /// when the address is over its limit and should get 429. Fails closed:
    /// a poisoned lock answers 429 too.
    pub(crate) fn failed(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let Ok(mut windows) = self.windows.lock() else {
            return Some(TOKEN_FAILURE_WINDOW);
        };
        if windows.len() >= TOKEN_MAX_TRACKED && !windows.contains_key(&address) {
            windows.retain(|_, (start, _)| {
                now.saturating_duration_since(*start) < TOKEN_FAILURE_WINDOW
            });
            if windows.len() >= TOKEN_MAX_TRACKED {
                // Every tracked address failed within the last minute: a
                // flood. New addresses are refused as if over the limit.
                return Some(TOKEN_FAILURE_WINDOW);
            }
        }
        let (start, count) = windows.entry(address).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= TOKEN_FAILURE_WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        (*count > TOKEN_FAILURES).then(|| {
            TOKEN_FAILURE_WINDOW
                .saturating_sub(now.saturating_duration_since(*start))
                .max(Duration::from_secs(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits() -> LoginLimits {
        LoginLimits {
            pair_failures: 5,
            pair_window: Duration::from_secs(900),
            user_free_failures: 10,
            user_base_delay: Duration::from_secs(1),
            user_max_delay: Duration::from_secs(300),
            user_window: Duration::from_secs(900),
            max_tracked: 100,
        }
    }

    fn throttled(result: Result<Reservation<'_>, Refusal>) -> Option<(Scope, Duration)> {
        match result {
            Ok(r) => {
                r.release();
                None
            }
            Err(Refusal::Throttled { scope, retry_after }) => Some((scope, retry_after)),
            Err(Refusal::Unavailable { .. }) => panic!("unavailable"),
        }
    }

    #[test]
    fn reservations_count_before_the_check_so_a_burst_gets_five() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        // 40 attempts begun before any finished: only 5 may be checked.
        let held: Vec<_> = (0..40)
            .filter_map(|_| limiter.begin("admin", ip(1), t0).ok())
            .collect();
        assert_eq!(held.len(), 5);
        for r in held {
            r.failed(t0);
        }
        // Even the right password from that address waits for the window.
        let (scope, wait) = throttled(limiter.begin("admin", ip(1), t0)).unwrap();
        assert_eq!(scope, Scope::Pair);
        assert_eq!(wait, Duration::from_secs(900));
        let later = t0 + Duration::from_secs(899);
        assert!(throttled(limiter.begin("admin", ip(1), later)).is_some());
        assert!(throttled(limiter.begin("admin", ip(1), t0 + Duration::from_secs(900))).is_none());
        // Another user from the same address, and the same user from
        // another address, are not affected by the pair limit.
        assert!(throttled(limiter.begin("alice", ip(1), t0)).is_none());
        assert!(throttled(limiter.begin("admin", ip(2), t0)).is_none());
    }

    #[test]
    fn success_clears_and_release_counts_nothing() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..4 {
            limiter.begin("admin", ip(1), t0).unwrap().failed(t0);
        }
        limiter.begin("admin", ip(1), t0).unwrap().succeeded();
        for _ in 0..4 {
            limiter.begin("admin", ip(1), t0).unwrap().failed(t0);
        }
        for _ in 0..10 {
            limiter.begin("admin", ip(1), t0).unwrap().release();
        }
        assert!(throttled(limiter.begin("admin", ip(1), t0)).is_none());
    }

    #[test]
    fn a_dropped_reservation_counts_as_a_failure() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(limiter.begin("admin", ip(1), t0).unwrap());
        }
        assert!(throttled(limiter.begin("admin", ip(1), Instant::now())).is_some());
    }

    #[test]
    fn failures_from_many_addresses_slow_the_user_down_exponentially() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        // Ten free failures, two from each of five addresses.
        for i in 0..10u8 {
            limiter.begin("admin", ip(i / 2), t0).unwrap().failed(t0);
        }
        // The 11th attempt, from a fresh address, waits 1 s.
        let (scope, wait) = throttled(limiter.begin("admin", ip(50), t0)).unwrap();
        assert_eq!((scope, wait), (Scope::User, Duration::from_secs(1)));
        // Then the delay doubles with every failure: 2, 4, 8, … capped at 300.
        let mut now = t0 + Duration::from_secs(1);
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for n in 1..=12u32 {
            // A fresh address each time: the pair limit stays out of it.
            let from = ip(100 + n as u8);
            let r = limiter
                .begin("admin", from, now)
                .expect("allowed after the wait");
            // While it is checked, nobody else gets a turn for this user.
            assert!(throttled(limiter.begin("admin", ip(51), now)).is_some());
            r.failed(now);
            let (_, wait) = throttled(limiter.begin("admin", ip(52), now)).unwrap();
            seen.push(wait.as_secs());
            expected.push((1u64 << n).min(300));
            // Just before the wait ends: still refused.
            assert!(throttled(limiter.begin(
                "admin",
                ip(52),
                now + wait - Duration::from_millis(1)
            ))
            .is_some());
            now += wait;
        }
        assert_eq!(seen, expected);
        // The real user gets in after the wait, from anywhere, and that
        // clears the user's record.
        limiter.begin("admin", ip(99), now).unwrap().succeeded();
        assert!(throttled(limiter.begin("admin", ip(98), now)).is_none());
    }

    #[test]
    fn a_users_failures_are_forgotten_after_the_window() {
        let limiter = LoginLimiter::new(limits());
        let t0 = Instant::now();
        for i in 0..10u8 {
            limiter.begin("admin", ip(i), t0).unwrap().failed(t0);
        }
        assert!(throttled(limiter.begin("admin", ip(50), t0)).is_some());
        let later = t0 + Duration::from_secs(900);
        assert!(throttled(limiter.begin("admin", ip(50), later)).is_none());
    }

    #[test]
    fn a_full_table_forgets_expired_and_harmless_records_never_limiting_ones() {
        let mut l = limits();
        l.max_tracked = 4;
        l.user_free_failures = 100;
        let limiter = LoginLimiter::new(l);
        let t0 = Instant::now();
        // The target: locked out from address 1.
        for _ in 0..5 {
            limiter.begin("admin", ip(1), t0).unwrap().failed(t0);
        }
        // Fill the pair table with records that limit nobody (one failure).
        for name in ["a", "b", "c"] {
            limiter.begin(name, ip(1), t0).unwrap().failed(t0);
        }
        assert_eq!(limiter.tracked().0, 4);
        // New names push out the harmless records, never the target's.
        for name in ["d", "e", "f", "g", "h"] {
            limiter.begin(name, ip(1), t0).unwrap().failed(t0);
            assert!(
                throttled(limiter.begin("admin", ip(1), t0)).is_some(),
                "the target's record was evicted by `{name}`"
            );
        }
        // Fill the table with limiting records: new names are refused.
        for name in ["x", "y", "z"] {
            for _ in 0..5 {
                match limiter.begin(name, ip(1), t0) {
                    Ok(r) => r.failed(t0),
                    Err(e) => panic!("{name}: {e:?}"),
                }
            }
        }
        assert_eq!(
            limiter.begin("new", ip(1), t0).err(),
            Some(Refusal::Unavailable {
                retry_after: UNAVAILABLE_RETRY
            })
        );
        assert!(throttled(limiter.begin("admin", ip(1), t0)).is_some());
        // Once the records expire there is room again.
        let later = t0 + Duration::from_secs(900);
        assert!(throttled(limiter.begin("new", ip(1), later)).is_none());
    }

    #[test]
    fn records_being_checked_are_never_evicted() {
        let mut l = limits();
        l.max_tracked = 2;
        let limiter = LoginLimiter::new(l);
        let t0 = Instant::now();
        let a = limiter.begin("a", ip(1), t0).unwrap();
        let b = limiter.begin("b", ip(1), t0).unwrap();
        assert!(matches!(
            limiter.begin("c", ip(1), t0),
            Err(Refusal::Unavailable { .. })
        ));
        a.failed(t0);
        b.release();
        assert!(throttled(limiter.begin("c", ip(1), t0)).is_none());
    }

    #[test]
    fn a_poisoned_limiter_refuses_every_attempt() {
        let limiter = LoginLimiter::new(limits());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = limiter.tables.lock().unwrap();
            panic!("poison the lock");
        }));
        assert!(matches!(
            limiter.begin("admin", ip(1), Instant::now()),
            Err(Refusal::Unavailable { .. })
        ));
    }

    #[test]
    fn token_failures_answer_429_after_a_burst_per_address() {
        let failures = TokenFailures::default();
        let t0 = Instant::now();
        for _ in 0..TOKEN_FAILURES {
            assert_eq!(failures.failed(ip(1), t0), None);
        }
        assert_eq!(failures.failed(ip(1), t0), Some(TOKEN_FAILURE_WINDOW));
        assert_eq!(failures.failed(ip(2), t0), None);
        assert_eq!(failures.failed(ip(1), t0 + TOKEN_FAILURE_WINDOW), None);
    }
}
