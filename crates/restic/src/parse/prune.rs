//! `prune`'s report. Every released restic prints it as text (JSON prune
//! output exists only on restic's development branch), so the figure that
//! matters — how much space prune freed — is read from the line
//! `total prune:           4 blobs / 1.192 KiB`.

/// Bytes freed, from a `total prune:` line; `None` for any other line.
pub(crate) fn freed_bytes(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix("total prune:")?;
    let (_, size) = rest.split_once('/')?;
    parse_size(size.trim())
}

/// restic's human sizes: `0 B`, `1.192 KiB`, `2.864 MiB`, `1.5 GiB`, `2 TiB`.
fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = text.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (number * scale).round();
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_prune_line() {
        assert_eq!(
            freed_bytes("total prune:           4 blobs / 1.192 KiB"),
            Some(1221)
        );
        assert_eq!(freed_bytes("total prune:           0 blobs / 0 B"), Some(0));
        assert_eq!(
            freed_bytes("total prune:  10 blobs / 2.5 MiB"),
            Some(2_621_440)
        );
        assert_eq!(
            freed_bytes("total prune: 1 blobs / 1.000 GiB"),
            Some(1 << 30)
        );
    }

    #[test]
    fn ignores_other_lines_and_odd_units() {
        assert_eq!(freed_bytes("to delete:             0 blobs / 0 B"), None);
        assert_eq!(freed_bytes("total prune: 4 blobs / 1.2 XB"), None);
        assert_eq!(freed_bytes("total prune: garbage"), None);
    }

    #[test]
    fn the_recorded_0_14_report_yields_its_figure() {
        let report = include_str!("../../tests/fixtures/v0.14/prune.stdout");
        let freed: Vec<u64> = report.lines().filter_map(freed_bytes).collect();
        assert_eq!(freed, vec![1221]);
    }
}
