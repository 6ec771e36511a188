//! The workspace's `rust-version` is an honest promise: no locked
//! dependency built for this platform needs a newer Rust than it declares.
//! Read from `cargo metadata`, so checking needs no other toolchain.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a panic is a failure

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A `major.minor[.patch]` version as numbers, for comparing.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|e| panic!("version `{text}`: {e}"))
    });
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// This machine's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

#[test]
fn declared_rust_version_covers_every_locked_dependency() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(&workspace)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");

    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Only what the resolver builds for this platform counts.
    let built: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let packages = metadata["packages"].as_array().expect("packages");

    let declared: Vec<(String, (u64, u64, u64))> = packages
        .iter()
        .filter(|p| members.contains(&p["id"].as_str().unwrap_or_default()))
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let rv = p["rust_version"]
                .as_str()
                .unwrap_or_else(|| panic!("workspace crate `{name}` declares no rust-version"));
            (name, version(rv))
        })
        .collect();
    assert!(!declared.is_empty(), "no workspace members found");
    let promised = declared.iter().map(|(_, v)| *v).min().expect("members");

    let mut too_new: Vec<String> = packages
        .iter()
        .filter(|p| {
            let id = p["id"].as_str().unwrap_or_default();
            built.contains(&id) && !members.contains(&id)
        })
        .filter_map(|p| {
            let needs = version(p["rust_version"].as_str()?);
            (needs > promised).then(|| {
                format!(
                    "{} {} needs Rust {}.{}",
                    p["name"].as_str().unwrap_or_default(),
                    p["version"].as_str().unwrap_or_default(),
                    needs.0,
                    needs.1
                )
            })
        })
        .collect();
    too_new.sort();
    assert!(
        too_new.is_empty(),
        "Cargo.toml promises Rust {}.{} (`rust-version`), but the lock file holds:\n  {}\n\
         raise `rust-version` in the workspace Cargo.toml (and the README), or pin older versions",
        promised.0,
        promised.1,
        too_new.join("\n  ")
    );
}
