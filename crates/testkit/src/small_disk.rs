//! A small file system the test controls — a `tmpfs`, or an ext4 image on a
//! loop device — mounted on a temporary folder, for tests of what the
//! server does when its disk fills up or its files turn read-only.
//! Mounting needs root: [`SmallDisk::mount`] and [`SmallDisk::mount_ext4`]
//! say why they cannot otherwise, and the test prints that and skips (CI
//! runs as root, so it takes the real path).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use tempfile::TempDir;

/// The file that fills the disk.
const FILLER: &str = ".filler";

/// A mounted file system of a fixed size, unmounted when dropped.
pub struct SmallDisk {
    /// Where it is mounted.
    at: PathBuf,
    /// The temporary mount point, when the disk made its own.
    _dir: Option<TempDir>,
    /// The ext4 image's folder, deleted after the unmount.
    _image: Option<TempDir>,
}

impl SmallDisk {
    /// Mounts a `tmpfs` of `size_mib` MiB on a new temporary folder.
    /// `Err` says why it cannot (not root, no `mount`), for the test to
    /// print as its reason to skip.
    pub fn mount(size_mib: u32) -> anyhow::Result<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("rm-small-disk-")
            .tempdir()?;
        SmallDisk::mount_tmpfs(dir.path(), size_mib)?;
        Ok(SmallDisk {
            at: dir.path().to_owned(),
            _dir: Some(dir),
            _image: None,
        })
    }

    /// Mounts a `tmpfs` of `size_mib` MiB on the existing folder `at` (a
    /// second file system inside a tree, for `--one-file-system`).
    pub fn mount_on(at: &Path, size_mib: u32) -> anyhow::Result<SmallDisk> {
        SmallDisk::mount_tmpfs(at, size_mib)?;
        Ok(SmallDisk {
            at: at.to_owned(),
            _dir: None,
            _image: None,
        })
    }

    fn mount_tmpfs(at: &Path, size_mib: u32) -> anyhow::Result<()> {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0755"))
            .arg("tmpfs")
            .arg(at))
    }

    /// Mounts a new ext4 file system of `size_mib` MiB (an image file on a
    /// loop device). Unlike tmpfs, ext4 refuses writes to a file made
    /// immutable (`chattr +i`) even through descriptors opened before.
    pub fn mount_ext4(size_mib: u32) -> anyhow::Result<SmallDisk> {
        let image_dir = tempfile::Builder::new()
            .prefix("rm-ext4-image-")
            .tempdir()?;
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)?.set_len(u64::from(size_mib) << 20)?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        let dir = tempfile::Builder::new()
            .prefix("rm-small-disk-")
            .tempdir()?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir.path()))?;
        Ok(SmallDisk {
            at: dir.path().to_owned(),
            _dir: Some(dir),
            _image: Some(image_dir),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Writes a filler file until the file system is full; returns how
    /// many bytes it took.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())?;
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // A partial last page can still leave room for a few bytes.
        let _ = file.write_all(&[0u8; 512]);
        Ok(written)
    }

    /// Deletes the filler file: the space is back.
    pub fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.filler()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Remounts it read-only (`true`) or read-write (`false`), as a kernel
    /// does with a file system that reported errors.
    pub fn set_read_only(&self, read_only: bool) -> anyhow::Result<()> {
        let option = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let status = Command::new("mount")
            .args(["-o", option])
            .arg(self.path())
            .status()
            .context("running mount -o remount")?;
        if !status.success() {
            bail!("`mount -o {option}` failed ({status})");
        }
        Ok(())
    }

    fn filler(&self) -> PathBuf {
        self.path().join(FILLER)
    }
}

/// Runs a set-up command; `Err` says what failed and that it needs root.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {} — mounting needs root (CI runs as root)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so a process still holding a file there (a server that
        // is being killed) cannot keep the mount around.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
