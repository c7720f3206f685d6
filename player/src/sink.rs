//! Where a play's verified bytes go.

use anyhow::Context;
use tokio::io::AsyncWriteExt;

/// `--out -`: the title goes to standard output.
pub fn is_stdout(out: &std::path::Path) -> bool {
    out.as_os_str() == "-"
}

/// Where a play's verified bytes go: a regular file (created or truncated, synced at the end),
/// or anything else writable: standard output for `-`, a pipe, a device such as `/dev/null`
/// (written as it is, never truncated or synced: `fsync` on `/dev/null` is EINVAL).
pub(crate) struct Sink {
    file: tokio::fs::File,
    /// A regular file: synced at the end.
    sync: bool,
    shown: String,
}

impl Sink {
    pub(crate) async fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        if is_stdout(path) {
            use std::os::fd::AsFd;
            let fd = std::io::stdout().as_fd().try_clone_to_owned().context("opening standard output")?;
            let file = tokio::fs::File::from_std(std::fs::File::from(fd));
            return Ok(Sink { file, sync: false, shown: "standard output".into() });
        }
        let shown = path.display().to_string();
        let special = tokio::fs::metadata(path).await.is_ok_and(|m| !m.is_file() && !m.is_dir());
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true);
        if !special {
            options.create(true).truncate(true);
        }
        let file = options.open(path).await.with_context(|| format!("opening {shown} for writing"))?;
        Ok(Sink { file, sync: !special, shown })
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(bytes).await.with_context(|| format!("writing to {}", self.shown))
    }

    /// Flushes, and syncs a regular file.
    pub(crate) async fn finish(&mut self) -> anyhow::Result<()> {
        self.file.flush().await.with_context(|| format!("flushing {}", self.shown))?;
        if self.sync {
            self.file.sync_all().await.with_context(|| format!("syncing {}", self.shown))?;
        }
        Ok(())
    }
}
