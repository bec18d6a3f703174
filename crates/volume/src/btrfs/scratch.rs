//! [`ScratchBtrfs`]: a throw-away btrfs file system on a loop device, for tests and
//! benchmarks only (the provider never uses it). It shells out to `losetup`, `mkfs.btrfs`,
//! `mount` and `btrfs subvolume create` — fine for test set-up, unlike in the provider — and
//! needs root. Dropping it unmounts the file system, detaches the loop device and removes the
//! image, also when the test using it fails.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A mounted scratch btrfs. See the module documentation.
#[derive(Debug)]
pub struct ScratchBtrfs {
    image: PathBuf,
    mount: PathBuf,
    device: Option<String>,
    mounted: bool,
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} {:?} failed ({}): {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl ScratchBtrfs {
    /// Makes a btrfs of `size` bytes (a sparse image under the temporary directory, at least
    /// 256 MiB) and mounts it.
    pub fn create(size: u64) -> io::Result<ScratchBtrfs> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("shadowcopy-btrfs-{}-{n}", std::process::id()));
        let mut s = ScratchBtrfs {
            image: base.with_extension("img"),
            mount: base.with_extension("mnt"),
            device: None,
            mounted: false,
        };
        fs::File::create(&s.image)?.set_len(size.max(256 << 20))?;
        fs::create_dir_all(&s.mount)?;
        let dev = run(Command::new("losetup").arg("--find").arg("--show").arg(&s.image))?;
        s.device = Some(dev.clone());
        run(Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&dev))?;
        run(Command::new("mount").arg(&dev).arg(&s.mount))?;
        s.mounted = true;
        Ok(s)
    }

    /// For a test: the scratch file system, or — when it cannot be made (not root, no loop
    /// device, no `mkfs.btrfs`) — a panic when `CI` is set (CI must run these tests) and
    /// `None` otherwise, after saying on stderr why the test is skipped.
    pub fn for_test(test: &str) -> Option<ScratchBtrfs> {
        match ScratchBtrfs::create(512 << 20) {
            Ok(s) => Some(s),
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
                assert!(
                    !ci,
                    "{test}: CI needs a btrfs on a loop device (root, losetup, mkfs.btrfs from btrfs-progs): {e}"
                );
                eprintln!(
                    "{test}: SKIPPED: cannot make a btrfs on a loop device (needs root and btrfs-progs): {e}"
                );
                None
            }
        }
    }

    /// The mount point (the top-level subvolume).
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// Creates subvolume `name` at the top of the file system; returns its path.
    pub fn subvolume(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.mount.join(name);
        run(Command::new("btrfs").arg("-q").arg("subvolume").arg("create").arg(&p))?;
        Ok(p)
    }
}

impl Drop for ScratchBtrfs {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = run(Command::new("umount").arg(&self.mount))
        {
            // Something still holds a file open: detach lazily rather than leak the mount.
            eprintln!("scratch btrfs: {e}; unmounting lazily");
            if let Err(e) = run(Command::new("umount").arg("-l").arg(&self.mount)) {
                eprintln!("scratch btrfs: lazy unmount failed too: {e}");
            }
        }
        if let Some(dev) = &self.device
            && let Err(e) = run(Command::new("losetup").arg("-d").arg(dev))
        {
            eprintln!("scratch btrfs: detaching {dev}: {e}");
        }
        let _ = fs::remove_dir(&self.mount);
        let _ = fs::remove_file(&self.image);
    }
}
