//! The UDP socket beneath a QUIC endpoint, made here rather than by quinn so that its buffers
//! are sized for the load and the sizes the kernel granted are known and logged.
//!
//! Why: with the kernel's default receive buffer (`net.core.rmem_default`, 208 KiB here), one
//! appliance socket under 1,000 QUIC players at once dropped hundreds of thousands of
//! datagrams a run (`/proc/net/udp`), handshakes among them, and players timed out. The
//! kernel caps `SO_RCVBUF` at `net.core.rmem_max` (4 MiB here); a process with
//! `CAP_NET_ADMIN` may go past it with `SO_RCVBUFFORCE`, which is tried when the cap bites.
//! What was granted is reported (Linux keeps twice the asked size for its own bookkeeping and
//! reports that; the figures here are halved back to what a process asks for).

use std::net::{SocketAddr, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt};
use quinn::udp::{UdpSockRef, UdpSocketState};

/// Where the kernel's caps on socket buffers are set, for the operator hint.
const RMEM_MAX: &str = "/proc/sys/net/core/rmem_max";
const WMEM_MAX: &str = "/proc/sys/net/core/wmem_max";

/// What a socket was given: its buffers and its segmentation offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketReport {
    /// The receive and send buffer size asked for, in bytes.
    pub asked: usize,
    /// The receive buffer the kernel granted (as a process asks it: half what it reports).
    pub receive: usize,
    /// The send buffer the kernel granted (likewise).
    pub send: usize,
    /// Whether the sizes needed `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` past the kernel's caps.
    pub forced: bool,
    /// Datagrams one send may carry with generic segmentation offload (1: no GSO).
    pub gso_segments: usize,
    /// Datagrams one receive may carry with generic receive offload (1: no GRO).
    pub gro_segments: usize,
}

impl SocketReport {
    /// Whether the kernel granted less than asked.
    pub fn capped(&self) -> bool {
        self.receive < self.asked || self.send < self.asked
    }

    /// What an operator can do when the kernel capped the buffers.
    pub fn hint(&self) -> String {
        format!(
            "the kernel caps UDP socket buffers (net.core.rmem_max {}, net.core.wmem_max {}): \
             `sysctl -w net.core.rmem_max={asked} net.core.wmem_max={asked}` (or a file in \
             /etc/sysctl.d/) lets a node have them, or give it CAP_NET_ADMIN",
            read_cap(RMEM_MAX).map_or("unknown".into(), |v| v.to_string()),
            read_cap(WMEM_MAX).map_or("unknown".into(), |v| v.to_string()),
            asked = self.asked,
        )
    }
}

impl std::fmt::Display for SocketReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "receive buffer {} bytes, send buffer {} bytes (asked {}{}), GSO {} datagrams a send, GRO {} a receive",
            self.receive,
            self.send,
            self.asked,
            if self.forced { ", past the kernel's cap" } else { "" },
            self.gso_segments,
            self.gro_segments,
        )
    }
}

fn read_cap(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Binds a UDP socket on `addr` with receive and send buffers of `buffer` bytes (as far as
/// the kernel allows, see the module's doc), ready for quinn.
pub fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<(UdpSocket, SocketReport)> {
    let socket = UdpSocket::bind(addr)?;
    let report = size_buffers(&socket, buffer)?;
    Ok((socket, report))
}

/// Sizes `socket`'s buffers to `buffer` bytes, past the kernel's caps where the process may.
fn size_buffers(socket: &UdpSocket, buffer: usize) -> std::io::Result<SocketReport> {
    let state = UdpSocketState::new(UdpSockRef::from(socket))?;
    // A failed ask leaves the default, which is then reported: never fatal.
    let _ = state.set_recv_buffer_size(UdpSockRef::from(socket), buffer);
    let _ = state.set_send_buffer_size(UdpSockRef::from(socket), buffer);
    let granted = |s: &UdpSocketState| -> std::io::Result<(usize, usize)> {
        Ok((
            s.recv_buffer_size(UdpSockRef::from(socket))? / 2,
            s.send_buffer_size(UdpSockRef::from(socket))? / 2,
        ))
    };
    let (mut receive, mut send) = granted(&state)?;
    let mut forced = false;
    if receive < buffer || send < buffer {
        // Needs CAP_NET_ADMIN; without it the capped sizes stay.
        let size = buffer.min(i32::MAX as usize / 2);
        let r = receive < buffer && setsockopt(socket, sockopt::RcvBufForce, &size).is_ok();
        let s = send < buffer && setsockopt(socket, sockopt::SndBufForce, &size).is_ok();
        if r || s {
            forced = true;
            (receive, send) = granted(&state)?;
        }
    }
    Ok(SocketReport {
        asked: buffer,
        receive,
        send,
        forced,
        gso_segments: state.max_gso_segments(),
        gro_segments: state.gro_segments(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_at_least_the_default_and_reports_what_the_kernel_holds() {
        let (socket, report) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).unwrap();
        // The report is what the kernel says now, halved back.
        assert_eq!(report.receive, state.recv_buffer_size(UdpSockRef::from(&socket)).unwrap() / 2);
        assert_eq!(report.send, state.send_buffer_size(UdpSockRef::from(&socket)).unwrap() / 2);
        assert_eq!(report.asked, 1 << 20);
        assert!(report.gso_segments >= 1 && report.gro_segments >= 1);
        // 1 MiB is under this kernel's default caps (4 MiB) or forced past them.
        if !report.capped() {
            assert_eq!(report.receive, 1 << 20);
        }
        assert!(report.to_string().contains("receive buffer"));
    }

    #[test]
    fn a_hint_names_the_sysctl_and_the_size() {
        let report = SocketReport {
            asked: 8 << 20,
            receive: 4 << 20,
            send: 4 << 20,
            forced: false,
            gso_segments: 1,
            gro_segments: 1,
        };
        assert!(report.capped());
        let hint = report.hint();
        assert!(hint.contains("net.core.rmem_max=8388608"), "{hint}");
    }
}
