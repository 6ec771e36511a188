//! Schedule-time logic: when a cron schedule fires, whether a fire was
//! missed while nobody was running, and how much jitter to add.
//!
//! The agent fires backup schedules from its own clock so that backups
//! happen even while the server is down; the server uses the same code to
//! show the next run. Everything here is pure (no I/O, no sleeping), and
//! "now" always comes from a [`Clock`], so schedulers built on it can be
//! tested by moving a [`ManualClock`] instead of waiting.
//!
//! Cron parsing and searching is done by `croner`, which follows the Open
//! Cron Pattern Specification, also across daylight-saving changes:
//!
//! - **Spring forward (a gap).** A fixed-time schedule (single second,
//!   minute and hour, e.g. `30 2 * * *`) whose wall-clock time does not
//!   exist that day fires once, at the first real instant after the gap
//!   (03:00 when the clock jumps 02:00→03:00), and normally the next day.
//!   An interval schedule (wildcards or steps in the time fields, e.g.
//!   `30 * * * *`) simply has no fire in the missing hour: its fires stay
//!   evenly spaced in real time.
//! - **Fall back (an overlap).** A fixed-time schedule whose wall-clock time
//!   occurs twice fires once, at the earlier instant. An interval schedule
//!   fires in both halves of the repeated hour, again keeping its real
//!   spacing.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Local, NaiveDate, SubsecRound as _, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};

/// Errors of schedule parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed or can never fire.
    #[error("invalid cron expression `{expr}`: {reason}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error("unknown time zone `{0}` (expected an IANA name such as Europe/Berlin or UTC)")]
    UnknownTimezone(String),
}

/// The zone a schedule's wall-clock fields are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// The machine's own zone, as chrono reads it (`TZ`, `/etc/localtime`).
    Local,
    /// An IANA zone from the bundled database, so every host agrees.
    Named(Tz),
}

/// The cron nicknames, expanded before croner sees them: croner lacks
/// `@midnight`, and expanding here gives [`CronSchedule::describe`] plain
/// fields to work with.
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * SUN"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// A parsed cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// The expression as the operator wrote it, for display and storage.
    expr: String,
    /// Seconds, minute, hour, day of month, month, day of week: nicknames
    /// expanded, a missing seconds field filled with `0`, upper-cased.
    fields: [String; 6],
    cron: Cron,
    zone: Zone,
}

impl CronSchedule {
    /// Parses a schedule.
    ///
    /// `expr`: standard 5 fields (min hour dom month dow), or 6 with a
    /// leading seconds field, or a nickname
    /// `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly`.
    /// Month and weekday names (`JAN`, `MON`), ranges, lists and steps are
    /// accepted, as are croner's extensions (`L`, `W`, `#`). Day of month
    /// and day of week combine with OR, as in Vixie cron.
    ///
    /// `timezone`: IANA name (e.g. `"Europe/Berlin"`); `None` = the
    /// machine's local zone (`chrono::Local`).
    ///
    /// An expression that matches no real date (`0 0 30 2 *`) is rejected
    /// here rather than silently never firing.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<CronSchedule, ScheduleError> {
        let zone = match timezone {
            None => Zone::Local,
            Some(name) => Zone::Named(
                name.parse::<Tz>()
                    .map_err(|_| ScheduleError::UnknownTimezone(name.to_owned()))?,
            ),
        };
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        let fields = normalize(expr).map_err(invalid)?;
        // Seconds optional and years disallowed: exactly the 5- or 6-field
        // forms documented above (croner would otherwise accept a 7th,
        // year, field that other cron tools reject).
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&fields.join(" "))
            .map_err(|e| invalid(locate_error(&parser, &fields, &e)))?;
        // Searched on a zone-less clock: only the calendar matters here, and
        // croner gives up once it passes its year limit, so this is bounded.
        let probe = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        if let Some(probe) = probe {
            if cron.find_next_occurrence(&probe, false).is_err() {
                return Err(invalid(
                    "it never matches a real date (e.g. 30 February)".to_owned(),
                ));
            }
        }
        Ok(CronSchedule {
            expr: expr.to_owned(),
            fields,
            cron,
            zone,
        })
    }

    /// The expression as given to [`CronSchedule::parse`].
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The canonical IANA name of the zone, or `None` for the machine's
    /// local zone.
    pub fn timezone(&self) -> Option<&str> {
        match self.zone {
            Zone::Local => None,
            Zone::Named(tz) => Some(tz.name()),
        }
    }

    /// The first fire time strictly after `after`.
    ///
    /// `None` only if croner finds no fire before its search limit (year
    /// 5000), which [`CronSchedule::parse`] makes practically impossible.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(after, Direction::Forward)
    }

    /// The latest fire time at or before `at` (a fire exactly at `at`
    /// counts).
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(at, Direction::Backward)
    }

    /// The schedule's period around `at`: the next fire after the latest one
    /// at or before `at`, minus that latest one. Used as the default
    /// catch-up window of [`missed_fire`].
    ///
    /// For irregular schedules this is the gap that `at` falls in; across a
    /// DST change a daily schedule's period is 23 or 25 hours.
    pub fn period_at(&self, at: DateTime<Utc>) -> Option<Duration> {
        let latest = self.latest_at_or_before(at)?;
        let next = self.next_after(latest)?;
        Some(next - latest)
    }

    /// A short human description for operators, e.g. "every day at 02:30",
    /// "every hour at :15", "at 02:30 on Monday", "every 5 minutes", falling
    /// back to "cron `<expr>`" for anything more complex. The time zone is
    /// not included; see [`CronSchedule::timezone`].
    pub fn describe(&self) -> String {
        describe_fields(&self.fields).unwrap_or_else(|| format!("cron `{}`", self.expr.trim()))
    }

    fn find(&self, at: DateTime<Utc>, direction: Direction) -> Option<DateTime<Utc>> {
        // croner works in whole seconds. Truncating keeps both searches
        // right: every fire is on a whole second, so "after the truncated
        // instant" is "after `at`", and a fire at or before the truncated
        // instant is at or before `at`.
        let at = at.trunc_subsecs(0);
        match self.zone {
            Zone::Local => find_in(&self.cron, at.with_timezone(&Local), direction),
            Zone::Named(tz) => find_in(&self.cron, at.with_timezone(&tz), direction),
        }
    }
}

/// One croner search in the schedule's zone: forward exclusive, backward
/// inclusive, as the public methods promise.
fn find_in<Z: TimeZone>(
    cron: &Cron,
    start: DateTime<Z>,
    direction: Direction,
) -> Option<DateTime<Utc>> {
    let found = match direction {
        Direction::Forward => cron.find_next_occurrence(&start, false),
        Direction::Backward => cron.find_previous_occurrence(&start, true),
    };
    found.ok().map(|t| t.with_timezone(&Utc))
}

/// Expands nicknames and checks the field count, returning the six fields
/// (seconds first, upper-cased), or the reason the expression is invalid.
fn normalize(expr: &str) -> Result<[String; 6], String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("the expression is empty".to_owned());
    }
    let body = if trimmed.starts_with('@') {
        NICKNAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
            .map(|(_, fields)| *fields)
            .ok_or_else(|| {
                format!(
                    "unknown nickname; expected one of {}",
                    NICKNAMES.map(|(name, _)| name).join(", ")
                )
            })?
    } else {
        trimmed
    };
    let parts: Vec<String> = body.split_whitespace().map(str::to_uppercase).collect();
    match <[String; 6]>::try_from(parts) {
        Ok(six) => Ok(six),
        Err(parts) => match <[String; 5]>::try_from(parts) {
            Ok([minute, hour, dom, month, dow]) => {
                Ok(["0".to_owned(), minute, hour, dom, month, dow])
            }
            Err(parts) => Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) \
                 or 6 with a leading seconds field, got {}",
                parts.len()
            )),
        },
    }
}

/// croner's messages ("Number out of bounds.") do not say which field is
/// wrong; re-parsing each field alone among wildcards finds it, so the
/// operator is told "minute field `61`: …".
fn locate_error(
    parser: &CronParser,
    fields: &[String; 6],
    err: &croner::errors::CronError,
) -> String {
    const NAMES: [&str; 6] = [
        "seconds",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let culprit = (0..fields.len()).find(|&i| {
        let probe: Vec<&str> = fields
            .iter()
            .enumerate()
            .map(|(j, field)| if j == i { field.as_str() } else { "*" })
            .collect();
        parser.parse(&probe.join(" ")).is_err()
    });
    match culprit.and_then(|i| Some((NAMES.get(i)?, fields.get(i)?))) {
        Some((name, field)) => format!("{name} field `{field}`: {err}"),
        None => err.to_string(),
    }
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Describes the common shapes; `None` means "too complex, show the
/// expression". Deliberately conservative: a wrong description is worse
/// than the raw expression.
fn describe_fields(fields: &[String; 6]) -> Option<String> {
    let [sec, min, hour, dom, month, dow] = fields.each_ref().map(String::as_str);
    let every_day = is_any(dom) && is_any(month) && is_any(dow);

    if sec != "0" && every_day && is_any(min) && is_any(hour) {
        return match step_dividing(sec, 60)? {
            1 => Some("every second".to_owned()),
            n => Some(format!("every {n} seconds")),
        };
    }
    let sec = number(sec, 59)?;

    if every_day && is_any(hour) && sec == 0 {
        if let Some(m) = number(min, 59) {
            return Some(format!("every hour at :{m:02}"));
        }
        return match step_dividing(min, 60)? {
            1 => Some("every minute".to_owned()),
            n => Some(format!("every {n} minutes")),
        };
    }
    let min = number(min, 59)?;

    if every_day && sec == 0 {
        if let Some(n) = step_dividing(hour, 24) {
            return Some(match n {
                1 => format!("every hour at :{min:02}"),
                n => format!("every {n} hours at :{min:02}"),
            });
        }
    }
    let hour = number(hour, 23)?;
    let time = if sec == 0 {
        format!("{hour:02}:{min:02}")
    } else {
        format!("{hour:02}:{min:02}:{sec:02}")
    };

    if every_day {
        return Some(format!("every day at {time}"));
    }
    if is_any(dom) && is_any(month) {
        return Some(format!("at {time} on {}", weekdays(dow)?));
    }
    if !is_any(dow) {
        return None;
    }
    let day = number(dom, 31).filter(|d| *d >= 1)?;
    if is_any(month) {
        return Some(format!("at {time} on day {day} of every month"));
    }
    let month = month_index(month)?;
    Some(format!("at {time} on {day} {}", MONTHS.get(month)?))
}

fn is_any(field: &str) -> bool {
    field == "*" || field == "?"
}

/// A plain number no larger than `max`.
fn number(field: &str, max: u32) -> Option<u32> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok().filter(|n| *n <= max)
}

/// The step of `*` or `*/n` when it divides `cycle`: only then is the fire
/// spacing really even (`*/7` minutes has a 4-minute gap at each hour).
fn step_dividing(field: &str, cycle: u32) -> Option<u32> {
    let step = match field {
        "*" => 1,
        _ => number(field.strip_prefix("*/")?, cycle)?,
    };
    (step > 0 && cycle.is_multiple_of(step)).then_some(step)
}

/// "Monday", "Monday to Friday", "Monday, Wednesday, Friday".
fn weekdays(field: &str) -> Option<String> {
    let parts = field
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((from, to)) => Some(format!("{} to {}", weekday_name(from)?, weekday_name(to)?)),
            None => weekday_name(part).map(str::to_owned),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(parts.join(", "))
}

fn weekday_name(token: &str) -> Option<&'static str> {
    let index = match number(token, 7) {
        Some(n) => usize::try_from(n % 7).ok()?,
        None => ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
            .iter()
            .position(|name| *name == token)?,
    };
    WEEKDAYS.get(index).copied()
}

/// The zero-based month of a number (1–12) or a name (`JAN`).
fn month_index(token: &str) -> Option<usize> {
    match number(token, 12) {
        Some(n) => usize::try_from(n).ok()?.checked_sub(1),
        None => MONTHS.iter().position(|name| {
            name.get(..3)
                .is_some_and(|abbr| abbr.eq_ignore_ascii_case(token))
        }),
    }
}

/// Where "now" comes from, so schedulers can be tested without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `t` (backwards too, to test clock jumps).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.lock() = t;
    }

    /// Moves the clock by `by` (negative moves it back). Saturates at
    /// chrono's range instead of panicking.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now = now
            .checked_add_signed(by)
            .unwrap_or(if by < Duration::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // The guarded value is a plain timestamp, always valid, so a panic
        // elsewhere while holding the lock leaves nothing to repair.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// Lets a test keep an `Arc<ManualClock>` to move while the scheduler under
/// test owns another handle to it.
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

/// Whether a fire was missed while nobody was running, to be run once now.
///
/// `last_fire` is the last fire this host recorded for the schedule. The
/// answer is the latest fire at or before `now`, if it is after `last_fire`
/// and no older than `window` (`now - missed <= window`). `window: None`
/// means the schedule's own period at that time ([`CronSchedule::period_at`]).
/// The next regular fire has not come yet, so `now` is always within one
/// period of the latest fire: the default window therefore always admits
/// it. Pass a shorter window to skip catch-ups that are too stale.
///
/// Only ever one catch-up, however many fires were missed: it is the latest
/// one, as the older ones would back up the same data again.
///
/// `last_fire: None` (never ran, e.g. a schedule just created) gives `None`:
/// a brand-new schedule waits for its first regular fire instead of firing
/// immediately. A fire exactly at `now` counts as missed, so a caller that
/// checks at start-up should do so before its regular loop takes over.
pub fn missed_fire(
    schedule: &CronSchedule,
    last_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Option<Duration>,
) -> Option<DateTime<Utc>> {
    let last_fire = last_fire?;
    let latest = schedule.latest_at_or_before(now)?;
    if latest <= last_fire {
        return None;
    }
    let window = match window {
        Some(window) => window,
        None => schedule.period_at(now)?,
    };
    (now - latest <= window).then_some(latest)
}

/// `fire` plus a delay in `[0, jitter_seconds]` whole seconds chosen by
/// `random` (the caller supplies the randomness, so this is testable).
/// Spreads hosts sharing a schedule so they do not hit one repository at
/// the same second.
pub fn jittered(fire: DateTime<Utc>, jitter_seconds: u32, random: u64) -> DateTime<Utc> {
    // The remainder is at most `jitter_seconds`, so it fits in a u32; the
    // modulo bias is negligible for a 64-bit random value.
    let delay = random % (u64::from(jitter_seconds) + 1);
    let delay = u32::try_from(delay).unwrap_or(jitter_seconds);
    fire.checked_add_signed(Duration::seconds(i64::from(delay)))
        .unwrap_or(fire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sched(expr: &str, zone: &str) -> CronSchedule {
        CronSchedule::parse(expr, Some(zone)).unwrap()
    }

    /// Every fire in `[from, until)`.
    fn fires(s: &CronSchedule, from: &str, until: &str) -> Vec<DateTime<Utc>> {
        let until = utc(until);
        let mut out = Vec::new();
        let mut t = utc(from) - Duration::seconds(1);
        while let Some(next) = s.next_after(t).filter(|n| *n < until) {
            out.push(next);
            t = next;
        }
        out
    }

    // --- parsing and basic firing ---

    #[test]
    fn daily_nickname_fires_at_midnight() {
        let s = sched("@daily", "UTC");
        assert_eq!(
            s.next_after(utc("2026-05-10T13:00:00Z")),
            Some(utc("2026-05-11T00:00:00Z"))
        );
        assert_eq!(
            sched("@midnight", "UTC").next_after(utc("2026-05-10T13:00:00Z")),
            Some(utc("2026-05-11T00:00:00Z"))
        );
    }

    #[test]
    fn hourly_nickname_fires_on_the_hour() {
        let s = sched("@HOURLY", "UTC");
        assert_eq!(
            s.next_after(utc("2026-05-10T13:00:00Z")),
            Some(utc("2026-05-10T14:00:00Z"))
        );
    }

    #[test]
    fn other_nicknames_fire_at_their_usual_times() {
        let after = utc("2026-05-10T13:00:00Z"); // a Sunday
        let next = |e: &str| sched(e, "UTC").next_after(after);
        assert_eq!(next("@weekly"), Some(utc("2026-05-17T00:00:00Z")));
        assert_eq!(next("@monthly"), Some(utc("2026-06-01T00:00:00Z")));
        assert_eq!(next("@yearly"), Some(utc("2027-01-01T00:00:00Z")));
        assert_eq!(next("@annually"), Some(utc("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn five_field_expression_fires_at_minute_and_hour() {
        let s = sched("30 2 * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-05-10T01:00:00Z")),
            Some(utc("2026-05-10T02:30:00Z"))
        );
        // Strictly after: the fire instant itself is not "next".
        assert_eq!(
            s.next_after(utc("2026-05-10T02:30:00Z")),
            Some(utc("2026-05-11T02:30:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-05-10T02:29:59.999Z")),
            Some(utc("2026-05-10T02:30:00Z"))
        );
    }

    #[test]
    fn six_field_expression_has_a_leading_seconds_field() {
        let s = sched("*/10 * * * * *", "UTC");
        assert_eq!(
            fires(&s, "2026-05-10T12:00:00Z", "2026-05-10T12:00:35Z"),
            vec![
                utc("2026-05-10T12:00:00Z"),
                utc("2026-05-10T12:00:10Z"),
                utc("2026-05-10T12:00:20Z"),
                utc("2026-05-10T12:00:30Z"),
            ]
        );
        assert_eq!(
            s.next_after(utc("2026-05-10T12:00:55Z")),
            Some(utc("2026-05-10T12:01:00Z"))
        );
    }

    #[test]
    fn weekday_names_are_accepted_in_any_case() {
        // 2026-01-05 is a Monday.
        for expr in ["30 2 * * MON", "30 2 * * mon", "30 2 * * 1"] {
            assert_eq!(
                sched(expr, "UTC").next_after(utc("2026-01-01T00:00:00Z")),
                Some(utc("2026-01-05T02:30:00Z")),
                "{expr}"
            );
        }
    }

    #[test]
    fn ranges_and_steps_combine() {
        let s = sched("0 9-17/2 * * MON-FRI", "UTC");
        // From Friday 2026-01-09 16:00 to the next Monday.
        assert_eq!(
            fires(&s, "2026-01-09T16:00:00Z", "2026-01-12T12:00:00Z"),
            vec![
                utc("2026-01-09T17:00:00Z"),
                utc("2026-01-12T09:00:00Z"),
                utc("2026-01-12T11:00:00Z"),
            ]
        );
    }

    #[test]
    fn month_names_and_lists_are_accepted() {
        let s = sched("0 3 1,15 JAN,jul *", "UTC");
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"),
            vec![
                utc("2026-01-01T03:00:00Z"),
                utc("2026-01-15T03:00:00Z"),
                utc("2026-07-01T03:00:00Z"),
                utc("2026-07-15T03:00:00Z"),
            ]
        );
    }

    #[test]
    fn expression_and_timezone_are_kept() {
        let s = sched(" 30 2 * * * ", "Europe/Berlin");
        assert_eq!(s.expression(), " 30 2 * * * ");
        assert_eq!(s.timezone(), Some("Europe/Berlin"));
        let local = CronSchedule::parse("@daily", None).unwrap();
        assert_eq!(local.timezone(), None);
    }

    #[test]
    fn local_zone_schedules_fire_on_whole_minutes() {
        use chrono::Timelike as _;
        let s = CronSchedule::parse("* * * * *", None).unwrap();
        let after = utc("2026-05-10T12:00:30Z");
        let next = s.next_after(after).unwrap();
        assert!(next > after && next - after <= Duration::seconds(60));
        assert_eq!(next.second(), 0);
    }

    // --- time zones and DST ---

    #[test]
    fn berlin_two_am_is_one_utc_in_winter_and_midnight_utc_in_summer() {
        let s = sched("0 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc("2026-01-15T00:00:00Z")),
            Some(utc("2026-01-15T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-07-14T12:00:00Z")),
            Some(utc("2026-07-15T00:00:00Z"))
        );
    }

    #[test]
    fn new_york_two_am_is_seven_utc_in_winter_and_six_utc_in_summer() {
        let s = sched("0 2 * * *", "America/New_York");
        assert_eq!(
            s.next_after(utc("2026-01-15T00:00:00Z")),
            Some(utc("2026-01-15T07:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-07-15T00:00:00Z")),
            Some(utc("2026-07-15T06:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_a_skipped_fixed_time_at_the_end_of_the_gap() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does
        // not exist. croner fires once, at 03:00 CEST (01:00 UTC).
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, end of the gap
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST, normal again
            ]
        );
        // The backward search agrees with the forward one.
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-29T10:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_hour_of_an_interval_schedule() {
        // Hourly at :30 stays one real hour apart: 01:30 CET, 03:30 CEST.
        let s = sched("30 * * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z"),
            vec![utc("2026-03-29T00:30:00Z"), utc("2026-03-29T01:30:00Z")]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_fixed_time_once_at_the_earlier_instant() {
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30
        // happens twice (00:30 and 01:30 UTC).
        let s = sched("30 2 * * *", "Europe/Berlin");
        // The whole local day: 00:00 CEST (22:00 UTC the day before) to
        // 00:00 CET the day after.
        assert_eq!(
            fires(&s, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
            vec![utc("2026-10-25T00:30:00Z")]
        );
        assert_eq!(
            s.next_after(utc("2026-10-25T00:30:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        // From inside the second 02:30 hour, the latest fire is the first one.
        assert_eq!(
            s.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn fall_back_keeps_an_interval_schedule_evenly_spaced() {
        let s = sched("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-10-25T00:00:00Z", "2026-10-25T02:01:00Z"),
            vec![
                utc("2026-10-25T00:00:00Z"), // 02:00 CEST
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T01:00:00Z"), // 02:00 CET
                utc("2026-10-25T01:30:00Z"), // 02:30 CET
                utc("2026-10-25T02:00:00Z"), // 03:00 CET
            ]
        );
    }

    // --- errors ---

    /// Parses `expr` expecting an `InvalidCron` error that names it, and
    /// returns the reason.
    fn invalid_reason(expr: &str) -> String {
        let err = CronSchedule::parse(expr, Some("UTC")).unwrap_err();
        assert!(err.to_string().contains(&format!("`{expr}`")), "{err}");
        match err {
            ScheduleError::InvalidCron {
                expr: named,
                reason,
            } => {
                assert_eq!(named, expr);
                reason
            }
            other => panic!("{expr:?}: expected InvalidCron, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_minute_is_rejected() {
        assert!(invalid_reason("61 * * * *").contains("minute field `61`"));
        assert!(invalid_reason("0 25 * * *").contains("hour field `25`"));
    }

    #[test]
    fn wrong_field_count_is_rejected() {
        assert!(invalid_reason("* * *").contains("got 3"));
        assert!(invalid_reason("0 0 0 1 1 * 2030").contains("got 7"));
    }

    #[test]
    fn empty_expression_is_rejected() {
        assert!(invalid_reason("").contains("empty"));
        assert!(invalid_reason("   ").contains("empty"));
    }

    #[test]
    fn unknown_nickname_is_rejected() {
        assert!(invalid_reason("@often").contains("@daily"));
    }

    #[test]
    fn garbage_in_a_field_is_rejected() {
        assert!(invalid_reason("0 2 * * FUNDAY").contains("day-of-week field"));
        invalid_reason("x 2 * * *");
    }

    #[test]
    fn expression_that_never_fires_is_rejected() {
        assert!(invalid_reason("0 0 30 2 *").contains("never"));
        assert!(invalid_reason("0 0 31 4 *").contains("never"));
    }

    #[test]
    fn unknown_time_zone_is_rejected_by_name() {
        let err = CronSchedule::parse("@daily", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(err, ScheduleError::UnknownTimezone("Mars/Olympus".into()));
        assert!(err.to_string().contains("Mars/Olympus"));
        assert!(CronSchedule::parse("@daily", Some("")).is_err());
    }

    // --- latest_at_or_before and period_at ---

    #[test]
    fn latest_and_next_bracket_every_instant_even_across_dst() {
        // For any instant t: latest(t) <= t < next(t), and no fire lies
        // between them, so the backward search agrees with the forward one.
        let cases = [
            ("30 2 * * *", "Europe/Berlin"),
            ("0 2 * * *", "Europe/Berlin"),
            ("30 * * * *", "Europe/Berlin"),
            ("*/20 * * * *", "Europe/Berlin"),
            ("0 1 * * *", "America/New_York"),
            ("15 10 */2 * * *", "Europe/Berlin"),
        ];
        let days = [
            "2026-03-28T20:00:00Z",
            "2026-10-24T20:00:00Z",
            "2026-03-07T20:00:00Z",
            "2026-10-31T20:00:00Z",
        ];
        for (expr, zone) in cases {
            let s = sched(expr, zone);
            for day in days {
                let start = utc(day);
                for step in 0..(2 * 24 * 60 / 7) {
                    let t = start + Duration::minutes(7 * step);
                    let latest = s.latest_at_or_before(t).unwrap();
                    let next = s.next_after(t).unwrap();
                    assert!(latest <= t && t < next, "{expr} {zone} at {t}");
                    assert_eq!(s.next_after(latest), Some(next), "{expr} {zone} at {t}");
                }
            }
        }
    }

    #[test]
    fn rare_but_real_dates_are_accepted() {
        // 29 February that is also a Monday ('+' = day of month AND weekday).
        let s = sched("0 0 29 2 +MON", "UTC");
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2044-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn latest_at_or_before_includes_the_fire_instant_itself() {
        let s = sched("30 2 * * *", "UTC");
        let fire = utc("2026-05-10T02:30:00Z");
        assert_eq!(s.latest_at_or_before(fire), Some(fire));
        assert_eq!(
            s.latest_at_or_before(utc("2026-05-10T02:30:00.500Z")),
            Some(fire)
        );
    }

    #[test]
    fn latest_at_or_before_just_before_a_fire_is_the_previous_one() {
        let s = sched("30 2 * * *", "UTC");
        assert_eq!(
            s.latest_at_or_before(utc("2026-05-10T02:29:59Z")),
            Some(utc("2026-05-09T02:30:00Z"))
        );
    }

    #[test]
    fn latest_at_or_before_reaches_back_across_a_year() {
        let s = sched("@yearly", "UTC");
        assert_eq!(
            s.latest_at_or_before(utc("2026-12-31T23:59:59Z")),
            Some(utc("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn period_of_hourly_daily_and_weekly_schedules() {
        let at = utc("2026-05-13T10:20:00Z");
        let period = |e: &str| sched(e, "UTC").period_at(at);
        assert_eq!(period("@hourly"), Some(Duration::hours(1)));
        assert_eq!(period("@daily"), Some(Duration::days(1)));
        assert_eq!(period("@weekly"), Some(Duration::weeks(1)));
        assert_eq!(period("*/5 * * * *"), Some(Duration::minutes(5)));
    }

    #[test]
    fn period_of_a_daily_schedule_is_23_hours_across_spring_forward() {
        let s = sched("0 0 * * *", "Europe/Berlin");
        assert_eq!(
            s.period_at(utc("2026-03-29T12:00:00Z")),
            Some(Duration::hours(23))
        );
        assert_eq!(
            s.period_at(utc("2026-10-25T12:00:00Z")),
            Some(Duration::hours(25))
        );
    }

    // --- missed_fire ---

    fn daily_at_two() -> CronSchedule {
        sched("0 2 * * *", "UTC")
    }

    #[test]
    fn a_schedule_that_never_ran_does_not_catch_up() {
        let now = utc("2026-05-10T10:00:00Z");
        assert_eq!(missed_fire(&daily_at_two(), None, now, None), None);
    }

    #[test]
    fn nothing_is_missed_when_the_latest_fire_ran() {
        let now = utc("2026-05-10T10:00:00Z");
        let last = Some(utc("2026-05-10T02:00:00Z"));
        assert_eq!(missed_fire(&daily_at_two(), last, now, None), None);
    }

    #[test]
    fn a_missed_fire_within_the_default_window_is_caught_up() {
        // Ran two days ago, so today's 02:00 was missed; it is 8 h old and
        // the daily period is 24 h.
        let now = utc("2026-05-10T10:00:00Z");
        let last = Some(utc("2026-05-08T02:00:00Z"));
        assert_eq!(
            missed_fire(&daily_at_two(), last, now, None),
            Some(utc("2026-05-10T02:00:00Z"))
        );
    }

    #[test]
    fn a_missed_fire_older_than_the_window_is_not_caught_up() {
        let now = utc("2026-05-10T10:00:00Z");
        let last = Some(utc("2026-05-08T02:00:00Z"));
        assert_eq!(
            missed_fire(&daily_at_two(), last, now, Some(Duration::hours(1))),
            None
        );
        // The window is inclusive.
        assert_eq!(
            missed_fire(&daily_at_two(), last, now, Some(Duration::hours(8))),
            Some(utc("2026-05-10T02:00:00Z"))
        );
    }

    #[test]
    fn many_missed_fires_give_one_catch_up_for_the_latest() {
        let now = utc("2026-05-10T10:00:00Z");
        let last = Some(utc("2026-04-01T02:00:00Z"));
        assert_eq!(
            missed_fire(&daily_at_two(), last, now, None),
            Some(utc("2026-05-10T02:00:00Z"))
        );
    }

    #[test]
    fn a_last_fire_in_the_future_means_nothing_was_missed() {
        // The host's clock went backwards since it recorded the run.
        let now = utc("2026-05-10T10:00:00Z");
        let last = Some(utc("2026-05-11T02:00:00Z"));
        assert_eq!(missed_fire(&daily_at_two(), last, now, None), None);
    }

    // --- clocks ---

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(utc("2026-05-10T10:00:00Z"));
        assert_eq!(clock.now(), utc("2026-05-10T10:00:00Z"));
        clock.advance(Duration::minutes(90));
        assert_eq!(clock.now(), utc("2026-05-10T11:30:00Z"));
        clock.advance(Duration::hours(-2));
        assert_eq!(clock.now(), utc("2026-05-10T09:30:00Z"));
        clock.set(utc("2030-01-01T00:00:00Z"));
        assert_eq!(clock.now(), utc("2030-01-01T00:00:00Z"));
    }

    #[test]
    fn manual_clock_is_shared_through_an_arc() {
        let clock = Arc::new(ManualClock::new(utc("2026-05-10T10:00:00Z")));
        let as_dyn: Arc<dyn Clock> = clock.clone();
        clock.advance(Duration::seconds(5));
        assert_eq!(as_dyn.now(), utc("2026-05-10T10:00:05Z"));
    }

    #[test]
    fn system_clock_reads_the_real_time() {
        let before = Utc::now();
        let read = SystemClock.now();
        assert!(before <= read && read <= Utc::now());
    }

    // --- jitter ---

    #[test]
    fn zero_jitter_leaves_the_fire_time_alone() {
        let fire = utc("2026-05-10T02:00:00Z");
        for random in [0, 1, 12345, u64::MAX] {
            assert_eq!(jittered(fire, 0, random), fire);
        }
    }

    #[test]
    fn jitter_stays_within_zero_and_the_maximum() {
        let fire = utc("2026-05-10T02:00:00Z");
        assert_eq!(jittered(fire, 60, 0), fire);
        assert_eq!(jittered(fire, 60, 60), fire + Duration::seconds(60));
        assert_eq!(jittered(fire, 60, 61), fire);
        assert_eq!(jittered(fire, 60, 7), fire + Duration::seconds(7));
        for random in [1, 59, 1_000_003, u64::MAX, u64::MAX / 3] {
            let delay = jittered(fire, 60, random) - fire;
            assert!(delay >= Duration::zero() && delay <= Duration::seconds(60));
        }
        let max = jittered(fire, u32::MAX, u64::MAX) - fire;
        assert!(max >= Duration::zero() && max <= Duration::seconds(i64::from(u32::MAX)));
    }

    // --- describe ---

    #[test]
    fn common_schedules_are_described_in_words() {
        let cases = [
            ("30 2 * * *", "every day at 02:30"),
            ("@daily", "every day at 00:00"),
            ("15 * * * *", "every hour at :15"),
            ("@hourly", "every hour at :00"),
            ("30 2 * * MON", "at 02:30 on Monday"),
            ("0 22 * * 1-5", "at 22:00 on Monday to Friday"),
            ("0 3 * * sat,SUN", "at 03:00 on Saturday, Sunday"),
            ("@weekly", "at 00:00 on Sunday"),
            ("0 4 1 * *", "at 04:00 on day 1 of every month"),
            ("@yearly", "at 00:00 on 1 January"),
            ("0 5 24 dec *", "at 05:00 on 24 December"),
            ("*/5 * * * *", "every 5 minutes"),
            ("* * * * *", "every minute"),
            ("10 */6 * * *", "every 6 hours at :10"),
            ("*/10 * * * * *", "every 10 seconds"),
            ("15 30 2 * * *", "every day at 02:30:15"),
        ];
        for (expr, want) in cases {
            assert_eq!(sched(expr, "UTC").describe(), want, "{expr}");
        }
    }

    #[test]
    fn complex_schedules_fall_back_to_the_expression() {
        for expr in [
            "*/7 * * * *",
            "0 9-17/2 * * MON-FRI",
            "0 0 L * *",
            "0 2 1 * MON",
        ] {
            assert_eq!(
                sched(expr, "UTC").describe(),
                format!("cron `{expr}`"),
                "{expr}"
            );
        }
    }
}
