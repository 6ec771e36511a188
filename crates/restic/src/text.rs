//! Small text helpers: turning raw output bytes into clean log lines, and
//! formatting sizes and durations the way an operator reads them.
//!
//! restic writes terminal escapes even when not on a terminal (0.14 prefixes
//! "signal interrupt received" with `ESC[2K`), and progress bars redraw with
//! `\r`; neither belongs in a stored log.

use std::time::Duration;

/// Longest log line kept whole; longer ones are cut with a marker.
pub(crate) const MAX_LOG_LINE: usize = 64 * 1024;

/// Decodes one output line (lossy for invalid UTF-8), drops terminal escape
/// sequences, and keeps what a terminal would show after the last `\r`,
/// without trailing blanks (0.19 pads `\rsignal interrupt received, cleaning
/// up ` to overwrite a progress line, where 0.14 sends `ESC[2K` instead).
pub(crate) fn clean_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    let visible = match text.rfind('\r') {
        Some(cr) if cr + 1 < text.len() => &text[cr + 1..],
        _ => text,
    };
    let mut cleaned = strip_escapes(visible);
    cleaned.truncate(cleaned.trim_end_matches([' ', '\t']).len());
    cleaned
}

/// Removes ANSI CSI sequences (`ESC [ … final-byte`) and lone escapes.
fn strip_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Cuts `text` to [`MAX_LOG_LINE`] bytes (on a character boundary) and says
/// how much was cut, counting `already_dropped` bytes the reader discarded.
pub(crate) fn truncate_for_log(mut text: String, already_dropped: u64) -> String {
    let mut dropped = already_dropped;
    if text.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        dropped += (text.len() - cut) as u64;
        text.truncate(cut);
    }
    if dropped > 0 {
        text.push_str(&format!(" … [truncated {dropped} bytes]"));
    }
    text
}

/// `1.2 MiB`-style sizes (binary units, like restic's own reports).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `30s`, `1.5s`, `2m 5s`: short and exact enough for error messages.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && d.subsec_nanos() == 0 {
        let (m, s) = (secs / 60, secs % 60);
        return if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m {s}s")
        };
    }
    if d.subsec_nanos() == 0 {
        format!("{secs}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A duration restic reports in (fractional) seconds: `4.2s`, `2m 5s`.
pub(crate) fn human_seconds(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        "?".to_owned()
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        // Float-to-int `as` saturates, which is what an absurd value deserves.
        human_duration(Duration::from_secs(secs.round() as u64))
    }
}

/// Joins lines and cuts the result to `max` bytes so an error message stays
/// readable.
pub(crate) fn bounded_join<'a>(lines: impl IntoIterator<Item = &'a str>, max: usize) -> String {
    let mut out = String::new();
    for line in lines {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_escapes_carriage_returns_and_bad_utf8() {
        assert_eq!(
            clean_line(b"\x1b[2Ksignal interrupt received, cleaning up\n"),
            "signal interrupt received, cleaning up"
        );
        assert_eq!(clean_line(b"[0:01] 10%\r[0:02] 20%\r\n"), "[0:02] 20%");
        assert_eq!(clean_line(b"caf\xe9"), "caf\u{fffd}");
        assert_eq!(clean_line(b"plain"), "plain");
        assert_eq!(
            clean_line(b"\rsignal interrupt received, cleaning up \n"),
            "signal interrupt received, cleaning up"
        );
    }

    #[test]
    fn truncates_long_lines_with_a_marker() {
        let long = "é".repeat(MAX_LOG_LINE); // 2 bytes each
        let cut = truncate_for_log(long, 0);
        assert!(cut.ends_with(&format!("[truncated {} bytes]", MAX_LOG_LINE)));
        assert!(cut.len() < MAX_LOG_LINE + 64);
        assert_eq!(truncate_for_log("short".into(), 0), "short");
        assert_eq!(
            truncate_for_log("short".into(), 7),
            "short … [truncated 7 bytes]"
        );
    }

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human_duration(Duration::from_secs(120)), "2m");
    }
}
