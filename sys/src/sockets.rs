//! Socket handles.

/// A second, owned handle on the connected TCP socket behind `socket` (`F_DUPFD_CLOEXEC`).
///
/// A tokio socket stays registered with the reactor of the runtime it was created on. The
/// gateway moves some new connections to another runtime thread; this gives it a handle to
/// register there (`tokio::net::TcpStream::from_std`) before the first handle is dropped and
/// deregistered here. The socket's options and its non-blocking mode belong to the socket,
/// so the new handle has them too.
///
/// `socket` must be a TCP socket: what else it is, the handle is wrong for (though not unsafe).
#[cfg(unix)]
pub fn duplicate_tcp(
    socket: &impl std::os::unix::io::AsRawFd,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: the descriptor belongs to `socket`, borrowed (so open) for the call; fcntl with
    // F_DUPFD_CLOEXEC only reads it, and makes a new descriptor.
    let duplicate = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if duplicate < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `duplicate` is a descriptor this call just created; nothing else owns or closes
    // it, so the `TcpStream` may take it over.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(duplicate) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_duplicate_carries_the_connection_after_the_original_is_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (original, peer) = listener.accept().unwrap();
        original.set_nodelay(true).unwrap();
        let mut duplicate = duplicate_tcp(&original).unwrap();
        drop(original);
        assert_eq!(duplicate.peer_addr().unwrap(), peer);
        assert!(duplicate.nodelay().unwrap(), "socket options come along");
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        duplicate.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        duplicate.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
