//! Connections from a chosen source address: on loopback every 127.x.y.z is this host,
//! so one test process can look like many hosts (a flood from many addresses, honest
//! miners from another one).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A blocking TCP connection to `remote` from `local` (any free port).
pub fn connect_from(local: Ipv4Addr, remote: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain socket calls on a descriptor this function owns; it is closed on
    // every error path and handed to TcpStream (which then owns it) on success.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd| {
            let e = io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let src = sockaddr(SocketAddrV4::new(local, 0));
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0 {
            return fail(fd);
        }
        let dst = sockaddr(remote);
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            return fail(fd);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_peer_sees_the_chosen_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let _c = connect_from(Ipv4Addr::new(127, 0, 0, 7), addr).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::from([127, 0, 0, 7]));
    }
}
