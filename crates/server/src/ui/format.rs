//! Readable numbers and times for pages: sizes, ages, durations.

use chrono::{DateTime, Utc};

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `just now`, `5 min ago`, `3 h ago`, `2 d ago` (future times: `in 5 h`).
pub(crate) fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    if seconds < 0 {
        return format!("in {}", span(-seconds));
    }
    if seconds < 45 {
        return String::from("just now");
    }
    format!("{} ago", span(seconds))
}

/// `45 s`, `5 min`, `3 h`, `2 d`.
pub(crate) fn span(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A timestamp as operators read it, in UTC.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(3_000_000), "2.9 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn ages_read_naturally() {
        let now = Utc::now();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - chrono::Duration::minutes(5), now), "5 min ago");
        assert_eq!(ago(now - chrono::Duration::hours(30), now), "1 d ago");
        assert_eq!(ago(now + chrono::Duration::hours(5), now), "in 5 h");
    }
}
