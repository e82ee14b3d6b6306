//! A size-limited tmpfs mounted by a test: a small filesystem that fills up on demand.
//! Mounting needs root and mount(2) permission; where it is not permitted a test skips
//! with a printed reason, unless the run requires its facilities (`LUMBERD_REQUIRE_ES`,
//! as `make test` sets): then it fails, as a missing Elasticsearch does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory, unmounted (lazily) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, options: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "lumberd-spool-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A mounted tmpfs, or `None` after a loud SKIPPED line where mounting is not permitted.
/// With `LUMBERD_REQUIRE_ES` set, a mount that fails is a test failure instead.
pub fn tmpfs(at: &Path, options: &str, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(at, options) {
        Ok(m) => Some(m),
        Err(e) if std::env::var_os("LUMBERD_REQUIRE_ES").is_some() => panic!(
            "{test}: LUMBERD_REQUIRE_ES is set but a tmpfs cannot be mounted (needs root and \
             mount(2) permission): {e}"
        ),
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED {test}: mounting a tmpfs needs root and mount(2) permission; set \
                 LUMBERD_REQUIRE_ES=1 to fail instead ***\n{e}\n"
            );
            None
        }
    }
}
