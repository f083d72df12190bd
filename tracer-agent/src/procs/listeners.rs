//! TCP listening sockets of the agent's network namespace, as (port, socket inode) pairs.
//!
//! The kernel answers a `sock_diag` netlink dump restricted to the LISTEN state by walking only
//! its listening hash, so the cost does not grow with the node's established and `TIME_WAIT`
//! connections the way reading /proc/net/tcp does (that file lists every socket). When netlink
//! is not available, or for a /proc tree other than the live one (tests), the /proc/net files
//! are read instead.

// The netlink wire format has fixed-width fields; the constants and lengths cast here fit them.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::{fs, io, path::Path};

/// A listening socket: its local port and its inode (as in /proc/PID/fd links).
pub type Listener = (u16, u64);

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN_STATE: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, then the 48-byte `inet_diag_sockid`.
const REQ_LEN: usize = 56;
/// Offsets inside `inet_diag_msg`: the source port in the socket id, and the inode after
/// expires, rqueue, wqueue and uid.
const MSG_SPORT: usize = 4;
const MSG_INODE: usize = 4 + 48 + 16;

/// The TCP sockets listening on one of `ports` (IPv4 and IPv6), from netlink.
pub fn by_netlink(ports: &[u16]) -> io::Result<Vec<Listener>> {
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut found = Vec::new();
    for (seq, family) in [(1u32, libc::AF_INET), (2, libc::AF_INET6)] {
        dump(&sock, seq, family as u8, ports, &mut found)?;
    }
    Ok(found)
}

fn dump(
    sock: &std::os::fd::OwnedFd,
    seq: u32,
    family: u8,
    ports: &[u16],
    found: &mut Vec<Listener>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    let total = req.len() as u32;
    req[0..4].copy_from_slice(&total.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req[NLMSG_HDR] = family;
    req[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&(1u32 << TCP_LISTEN_STATE).to_ne_bytes());
    // SAFETY: sending a buffer we own; the kernel is the implicit destination of a netlink socket.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if parse(&buf[..n as usize], seq, ports, found)? {
            return Ok(());
        }
    }
}

/// Reads the messages of one datagram; true once the dump is complete.
fn parse(mut data: &[u8], seq: u32, ports: &[u16], found: &mut Vec<Listener>) -> io::Result<bool> {
    let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    while data.len() >= NLMSG_HDR {
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDR || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sock_diag: truncated netlink message",
            ));
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let msg = &data[NLMSG_HDR..len];
        if u32_at(data, 8) == seq {
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(true),
                libc::NLMSG_ERROR => {
                    let errno = if msg.len() >= 4 {
                        -(u32_at(msg, 0) as i32)
                    } else {
                        libc::EIO
                    };
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ if kind == SOCK_DIAG_BY_FAMILY && msg.len() >= MSG_INODE + 4 => {
                    let port = u16::from_be_bytes([msg[MSG_SPORT], msg[MSG_SPORT + 1]]);
                    if ports.contains(&port) {
                        found.push((port, u64::from(u32_at(msg, MSG_INODE))));
                    }
                }
                _ => {}
            }
        }
        // Messages are aligned to 4 bytes.
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    Ok(false)
}

/// The same from /proc/net/tcp and tcp6 under `root` (a /proc tree).
pub fn by_proc_files(root: &Path, ports: &[u16]) -> Vec<Listener> {
    let mut found = Vec::new();
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(table) = fs::read_to_string(root.join(file)) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(port) = port
                && ports.contains(&port)
                && let Ok(inode) = cols[9].parse()
            {
                found.push((port, inode));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::TcpListener};

    use super::*;

    #[test]
    fn netlink_and_proc_agree_on_a_live_listener() {
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = TcpListener::bind("[::1]:0").ok();
        let mut ports = vec![l4.local_addr().unwrap().port()];
        if let Some(l) = &l6 {
            ports.push(l.local_addr().unwrap().port());
        }
        // A connected socket on the same port is not a listener.
        let _client = std::net::TcpStream::connect(l4.local_addr().unwrap()).unwrap();
        let netlink: HashSet<Listener> = by_netlink(&ports)
            .expect("sock_diag netlink works for unprivileged users")
            .into_iter()
            .collect();
        let files: HashSet<Listener> = by_proc_files(Path::new("/proc"), &ports)
            .into_iter()
            .collect();
        assert_eq!(netlink.len(), ports.len(), "{netlink:?}");
        assert_eq!(netlink, files);
        assert!(by_netlink(&[]).unwrap().is_empty());
    }

    #[test]
    fn rejects_truncated_messages() {
        let mut msg = vec![0u8; 20];
        msg[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(parse(&msg, 1, &[80], &mut Vec::new()).is_err());
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        done[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(parse(&done, 1, &[80], &mut Vec::new()).unwrap());
    }
}
