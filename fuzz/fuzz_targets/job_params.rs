//! Fuzzes job parameter validation: the first byte picks the job kind, the
//! rest is the params JSON. Accepted paths must be absolute and normalised;
//! a refusal must name a `params` field.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rm_protocol::params::JobParams;
use rm_protocol::JobKind;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kind = JobKind::ALL[usize::from(pick) % JobKind::ALL.len()];
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    match JobParams::parse(kind, &params) {
        Ok(parsed) => {
            let paths: Vec<String> = match &parsed {
                JobParams::Backup(p) => p.paths.clone(),
                JobParams::Restore(p) => p.include.iter().chain([&p.target]).cloned().collect(),
                _ => Vec::new(),
            };
            for path in paths {
                assert!(path.starts_with('/'), "{path:?}");
                assert!(!path.contains("//"), "{path:?}");
                assert!(path.split('/').all(|c| c != "." && c != ".."), "{path:?}");
            }
            assert_eq!(
                JobParams::parse(kind, &parsed.to_value()).ok(),
                Some(parsed)
            );
        }
        Err(e) => assert!(e.field.starts_with("params"), "{e:?}"),
    }
});
