//! Thread scheduling.

use std::io;

/// The nice value of background work: the lowest priority Linux has short of `SCHED_IDLE`
/// (which could starve it for good under a sustained load).
pub const BACKGROUND_NICE: i32 = 19;

/// Give the calling thread the lowest CPU priority ([`BACKGROUND_NICE`]), so that whatever it
/// runs (bcrypt) gets only the CPU the proxy threads leave. Lowering one's own priority needs
/// no privilege. On Linux the nice value belongs to the thread, not the process.
#[cfg(target_os = "linux")]
pub fn lower_current_thread_priority() -> io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let tid = libc::id_t::try_from(tid).map_err(|_| io::Error::other("bad thread id"))?;
    // SAFETY: setpriority only reads its integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere, a no-op: the priority stays as it was.
#[cfg(not(target_os = "linux"))]
pub fn lower_current_thread_priority() -> io::Result<()> {
    Ok(())
}

/// The calling thread's nice value (Linux), for checks and logs.
#[cfg(target_os = "linux")]
pub fn current_thread_nice() -> io::Result<i32> {
    // SAFETY: as above.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let tid = libc::id_t::try_from(tid).map_err(|_| io::Error::other("bad thread id"))?;
    // getpriority returns -1 both as a value and on error: errno tells them apart.
    // SAFETY: clearing errno before the call is the documented way to detect its error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority only reads its integer arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    let err = io::Error::last_os_error();
    if nice == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
        Err(err)
    } else {
        Ok(nice)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Only the calling thread is lowered: another thread keeps its priority.
    #[test]
    fn lowers_only_the_calling_thread() {
        let before = current_thread_nice().unwrap();
        let lowered = std::thread::spawn(|| {
            lower_current_thread_priority().unwrap();
            current_thread_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, BACKGROUND_NICE);
        assert_eq!(current_thread_nice().unwrap(), before);
    }
}
