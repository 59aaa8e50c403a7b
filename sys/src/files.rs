//! File creation mode.

/// Make every file and directory this process creates from now on owner-only (umask `077`):
/// the database and its journal, audit and decision exports, the mail outbox, keys and the
/// dev certificate hold secrets or personal data, and none of them is for other users on the
/// host. Returns the previous mask.
#[cfg(unix)]
pub fn owner_only() -> u32 {
    // SAFETY: umask only sets the process's mask and cannot fail.
    let previous = unsafe { libc::umask(0o077) };
    // mode_t is u32 on Linux, u16 on the BSDs and macOS.
    #[allow(clippy::useless_conversion)]
    u32::from(previous)
}

/// Block until this process holds an exclusive lock on `file` (`flock`), released when the
/// file is closed or the process ends. (`File::lock` does the same from Rust 1.89, above the
/// workspace's minimum Rust version.)
#[cfg(unix)]
pub fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call; flock only
        // changes the lock the kernel keeps for it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Elsewhere, nothing to set.
#[cfg(not(unix))]
pub fn owner_only() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_created_after_it_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        owner_only();
        let dir = std::env::temp_dir().join(format!("zonegate-sys-umask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(dir_mode, 0o700);
    }
}
