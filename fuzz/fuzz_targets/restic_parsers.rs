//! Fuzzes every restic output parser through `rm_restic::replay` (the same
//! line splitting, caps and parsers as a live run) and the document
//! parsers. Header bytes pick the command, the restic version, the exit
//! code and where stdout ends and stderr begins.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rm_restic::{
    classify, parse_ls, parse_snapshots, parse_stats, parse_version_output, replay, Command, Event,
    ResticVersion, RetentionPolicy, StatsMode, Status,
};

fn command(pick: u8) -> Command {
    match pick % 14 {
        0 => Command::Init,
        1 => Command::Backup {
            paths: vec!["/src".into()],
            excludes: vec![],
            tags: vec![],
            host: None,
            options: Default::default(),
        },
        2 => Command::Forget {
            policy: RetentionPolicy::keep_last(3),
            host: None,
        },
        3 => Command::Prune,
        4 => Command::Check {
            read_data_subset: None,
        },
        5 => Command::Unlock,
        6 => Command::Snapshots { host: None },
        7 => Command::Stats {
            mode: StatsMode::RestoreSize,
        },
        8 => Command::Stats {
            mode: StatsMode::RawData,
        },
        9 => Command::Restore {
            snapshot_id: "deadbeef".into(),
            include: vec![],
            target: "/tmp/r".into(),
        },
        10 => Command::Ls {
            snapshot_id: "deadbeef".into(),
            path: "/src".into(),
        },
        11 => Command::CatConfig,
        12 => Command::Copy {
            from: rm_restic::Repository::new("/primary", "pw"),
            host: Some("vm".into()),
            tags: vec![],
            snapshot_ids: vec![],
        },
        _ => Command::ListLocks,
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, minor, code, split, rest @ ..] = data else {
        return;
    };
    let command = command(*pick);
    let version = ResticVersion::new(0, 14 + u32::from(*minor % 8), 0);
    let exit_code = (*code != 255).then_some(i32::from(*code % 16));
    let at = rest.len() * usize::from(*split) / 255;
    let (stdout, stderr) = rest.split_at(at.min(rest.len()));

    let (events, finished) = replay(&command, version, stdout, stderr, exit_code);
    for event in &events {
        match event {
            Event::Line { text, .. } => assert!(text.len() <= 64 * 1024 + 64),
            Event::Progress(p) => {
                assert!(
                    p.percent.is_finite() && (0.0..=100.0).contains(&p.percent),
                    "{p:?}"
                );
                assert!(p.eta_seconds.is_none_or(|s| s <= 366 * 24 * 3600), "{p:?}");
            }
            _ => {}
        }
    }
    assert_eq!(
        finished.error.is_none(),
        finished.status == Status::Succeeded
    );
    assert!(finished.error.as_ref().is_none_or(|e| e.len() <= 4096 + 3));
    assert!(finished.stats.is_object());

    let text = String::from_utf8_lossy(rest);
    let _ = classify(&command, version, exit_code, &text);
    let _ = parse_ls(&text);
    let _ = parse_snapshots(&text);
    if let Ok(stats) = parse_stats(&text) {
        assert!(stats.compression_ratio.is_none_or(f64::is_finite));
    }
    let _ = parse_version_output(&text);
});
