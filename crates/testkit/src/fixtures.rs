//! Source trees for backup tests: generated files (nested folders, a 3 MB
//! file, a non-ASCII name) and a byte-for-byte comparison for restores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Deterministic, incompressible-looking bytes, fast (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes the test source tree:
/// `big.bin` (3 MB), `café-ü.txt`, `empty/`, `nested/{a.txt, deeper/{b.txt, deepest/c.txt}}`.
pub fn make_tree(root: &Path) {
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            ok(std::fs::create_dir_all(parent), "mkdir");
        }
        ok(std::fs::write(&path, bytes), "write");
    };
    write("big.bin", &noise(3_000_000, 7));
    write("café-ü.txt", "Grüße aus dem Café\n".as_bytes());
    write("nested/a.txt", b"a\n");
    write("nested/deeper/b.txt", &noise(10_000, 11));
    write("nested/deeper/deepest/c.txt", b"c\n");
    ok(std::fs::create_dir_all(root.join("empty")), "mkdir empty");
}

/// Asserts that every file under `expected` exists under `actual` with the
/// same bytes, and nothing else does.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let list = |root: &Path| -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in ok(std::fs::read_dir(&dir), "read_dir") {
                let path = ok(entry, "dir entry").path();
                let rel = path
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                if path.is_dir() {
                    stack.push(path);
                    out.insert(rel, None);
                } else {
                    out.insert(rel, Some(ok(std::fs::read(&path), "read")));
                }
            }
        }
        out
    };
    let (want, got) = (list(expected), list(actual));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "restored tree differs"
    );
    assert!(want == got, "restored file contents differ");
}

/// A source tree whose backup keeps restic busy for several seconds: one
/// sparse file of 2 GiB (zeros to read and chunk, no disk space used) and
/// a small note, under `root/slow`.
pub fn slow_source(root: &Path) -> PathBuf {
    let src = root.join("slow");
    let made = std::fs::create_dir_all(&src)
        .and_then(|()| std::fs::File::create(src.join("disk.img")))
        .and_then(|file| file.set_len(2 << 30))
        .and_then(|()| std::fs::write(src.join("note.txt"), "note\n"));
    if let Err(e) = made {
        panic!("making the slow source under {}: {e}", root.display());
    }
    src
}

/// Writes `files` files of incompressible bytes, `total_bytes` in all
/// (sizes vary around the mean, so restic chunks some and not others),
/// 100 to a folder (`root/d0000/f000.bin`, …). For measurements that need
/// a realistic number of files rather than one big one.
pub fn many_files(root: &Path, files: usize, total_bytes: u64, seed: u64) {
    let files = files.max(1);
    let mean = total_bytes / files as u64;
    let mut written = 0u64;
    for i in 0..files {
        // Sizes from half to one and a half of the mean; the last file
        // takes what is left, so the total is exact.
        let size = if i + 1 == files {
            total_bytes.saturating_sub(written)
        } else {
            let spread = (i as u64 * 7919) % (mean + 1);
            (mean / 2 + spread).min(total_bytes.saturating_sub(written))
        };
        written += size;
        let dir = root.join(format!("d{:04}", i / 100));
        ok(std::fs::create_dir_all(&dir), "mkdir");
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        ok(
            std::fs::write(
                dir.join(format!("f{:03}.bin", i % 100)),
                noise(len, seed.wrapping_add(i as u64)),
            ),
            "write",
        );
    }
}

/// SHA-256 of a file's bytes, hex: what a drill's evidence should say of
/// a file restored intact.
pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(ok(std::fs::read(path), "read")))
}

/// Damages a local repository's data: overwrites `len` bytes in the middle
/// of every pack file under `<repo>/data/` larger than `min_bytes` (the
/// packs holding file contents; small packs hold the trees, which restic
/// also keeps in its cache). Returns the packs changed.
pub fn corrupt_packs(repo: &Path, min_bytes: u64, len: usize) -> Vec<PathBuf> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;
    let mut changed = Vec::new();
    for dir in ok(std::fs::read_dir(repo.join("data")), "read_dir data") {
        let dir = ok(dir, "dir entry").path();
        for pack in ok(std::fs::read_dir(&dir), "read_dir pack folder") {
            let pack = ok(pack, "dir entry").path();
            let size = ok(std::fs::metadata(&pack), "stat pack").len();
            if size <= min_bytes {
                continue;
            }
            // restic writes packs read-only.
            ok(
                std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)),
                "chmod pack",
            );
            let mut file = ok(
                std::fs::OpenOptions::new().write(true).open(&pack),
                "open pack",
            );
            ok(file.seek(SeekFrom::Start(size / 2)), "seek");
            ok(file.write_all(&vec![0x5a; len]), "overwrite");
            changed.push(pack);
        }
    }
    changed
}
