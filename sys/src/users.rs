//! Process identity: who the process runs as, and giving up root after binding privileged
//! ports.

use std::ffi::CString;
use std::io;

/// The effective user id of this process.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// A user account from the system's user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// The account's primary group.
    pub gid: u32,
}

/// Look a user up by name (or a decimal uid). `Ok(None)` when there is no such user.
pub fn user(name: &str) -> io::Result<Option<Account>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value of a plain C struct of integers and pointers;
    // getpwnam_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `buf` is
    // writable for `buf.len()` bytes, `pwd` and `found` are ours; the strings getpwnam_r
    // points `pwd` at live in `buf`, which outlives the only reads below (of integers).
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        return Ok(name
            .parse::<u32>()
            .ok()
            .map(|uid| Account { uid, gid: uid }));
    }
    Ok(Some(Account {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// Look a group up by name (or a decimal gid). `Ok(None)` when there is no such group.
pub fn group(name: &str) -> io::Result<Option<u32>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as for `passwd` above: a plain C struct that getgrnam_r fills in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `user`: valid, NUL-terminated name; writable buffer of the given length;
    // result pointers are ours.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        return Ok(name.parse::<u32>().ok());
    }
    Ok(Some(grp.gr_gid))
}

/// Become `uid`:`gid` for good, with `gid` as the only group: supplementary groups first
/// (root's would otherwise stay), then the group, then the user (after which the others are
/// no longer allowed). glibc applies each to every thread of the process. Checked afterwards:
/// the ids are the new ones, and root cannot be taken back.
pub fn switch_to(uid: u32, gid: u32) -> io::Result<()> {
    let groups = [gid];
    // SAFETY: `groups` is a valid array of one gid_t for the duration of the call.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setgid and setuid take plain integers and only change the process's ids.
    if unsafe { libc::setgid(gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the get*id calls take no arguments and cannot fail.
    let (ruid, euid, rgid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if (ruid, euid, rgid, egid) != (uid, uid, gid, gid) {
        return Err(io::Error::other("the process ids did not change as asked"));
    }
    // SAFETY: as above; a successful setuid(0) here would mean root could be taken back.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(io::Error::other(
            "root could be taken back after dropping it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn root_and_unknown_names_are_looked_up() {
        assert_eq!(user("root").unwrap(), Some(Account { uid: 0, gid: 0 }));
        assert_eq!(group("root").unwrap(), Some(0));
        assert_eq!(user("no-such-user-zonegate").unwrap(), None);
        assert_eq!(group("no-such-group-zonegate").unwrap(), None);
        assert_eq!(
            user("4242").unwrap(),
            Some(Account {
                uid: 4242,
                gid: 4242
            })
        );
        assert_eq!(user("bad\0name").unwrap(), None);
    }
}
