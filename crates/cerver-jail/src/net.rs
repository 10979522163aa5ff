//! Network set-up inside the sandbox's network namespace.

use crate::JailError;

/// Brings up `lo` in the current (fresh) network namespace, so that code can use loopback.
///
/// Hand-written on purpose: one SIOCSIFFLAGS ioctl; a netlink crate would add an async stack to
/// this synchronous, single-threaded process for the same effect.
pub fn loopback_up() -> Result<(), JailError> {
    // SAFETY: plain syscalls on a socket we own; `ifreq` is zero-initialised and the name is
    // NUL-terminated within its fixed buffer.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(JailError::Setup(format!(
                "socket for lo: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(JailError::Setup(format!("bring up lo: {err}")));
        }
    }
    Ok(())
}
