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

/// A blocking rtnetlink client for the few requests a sandbox's network needs (create the
/// veth pair, set addresses, bring links up, add the default route). Messages are built and
/// parsed by `netlink-packet-route`; `netlink-sys` is the socket. The async `rtnetlink` crate
/// would need a runtime in this single-threaded, pre-exec process.
mod rtnl {
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
        NetlinkPayload,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    use crate::JailError;

    pub struct Rtnl {
        socket: Socket,
        seq: u32,
    }

    fn fail(what: &str, e: impl std::fmt::Display) -> JailError {
        JailError::Setup(format!("netlink {what}: {e}"))
    }

    impl Rtnl {
        pub fn open() -> Result<Rtnl, JailError> {
            let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| fail("socket", e))?;
            socket
                .bind(&SocketAddr::new(0, 0))
                .map_err(|e| fail("bind", e))?;
            socket
                .connect(&SocketAddr::new(0, 0))
                .map_err(|e| fail("connect", e))?;
            Ok(Rtnl { socket, seq: 0 })
        }

        /// Sends one request that creates something and waits for its acknowledgement.
        pub fn create(&mut self, what: &str, msg: RouteNetlinkMessage) -> Result<(), JailError> {
            self.request(what, msg, NLM_F_CREATE | NLM_F_EXCL)
        }

        /// Sends one request and waits for its acknowledgement.
        pub fn request(
            &mut self,
            what: &str,
            msg: RouteNetlinkMessage,
            flags: u16,
        ) -> Result<(), JailError> {
            self.seq += 1;
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = self.seq;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
            packet.finalize();
            let mut buf = vec![0u8; packet.buffer_len()];
            packet.serialize(&mut buf);
            self.socket.send(&buf, 0).map_err(|e| fail(what, e))?;
            let mut reply = vec![0u8; 8192];
            loop {
                let n = self
                    .socket
                    .recv(&mut &mut reply[..], 0)
                    .map_err(|e| fail(what, e))?;
                let mut offset = 0;
                while offset < n {
                    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..n])
                        .map_err(|e| fail(what, e))?;
                    let len = msg.header.length as usize;
                    if msg.header.sequence_number == self.seq
                        && let NetlinkPayload::Error(err) = msg.payload
                    {
                        return match err.code {
                            None => Ok(()),
                            Some(code) => {
                                Err(fail(what, std::io::Error::from_raw_os_error(-code.get())))
                            }
                        };
                    }
                    if len == 0 {
                        break;
                    }
                    offset += len;
                }
            }
        }
    }
}

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::protocol::{Egress, SANDBOX_IF};

fn if_index(name: &str) -> Result<u32, JailError> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| JailError::Setup(format!("interface {name}: {e}")))
}

fn link_up(rtnl: &mut rtnl::Rtnl, index: u32) -> Result<(), JailError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    rtnl.request("set link up", RouteNetlinkMessage::SetLink(msg), 0)
}

fn add_address(
    rtnl: &mut rtnl::Rtnl,
    index: u32,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), JailError> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    rtnl.create("add address", RouteNetlinkMessage::NewAddress(msg))
}

/// In the host (the helper, as root): creates the veth pair `host_if` ⇄ `eth0` with the
/// sandbox end directly in the network namespace of process `pid`, then gives the host end
/// the gateway address and brings it up. The kernel deletes both ends when the sandbox's
/// network namespace goes away, so nothing outlives the sandbox, even after a crash.
pub fn create_veth(net: &Egress, pid: i32) -> Result<(), JailError> {
    let mut rtnl = rtnl::Rtnl::open()?;
    // The kernel tears a network namespace down asynchronously: the pair of the sandbox that
    // held this slot before may still exist. The slot (and so the name) is ours now.
    if let Ok(stale) = nix::net::if_::if_nametoindex(net.host_if.as_str()) {
        let mut old = LinkMessage::default();
        old.header.index = stale;
        let _ = rtnl.request("delete stale veth", RouteNetlinkMessage::DelLink(old), 0);
    }
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(SANDBOX_IF.into()));
    peer.attributes.push(LinkAttribute::NetNsPid(pid as u32));
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName(net.host_if.clone()));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    rtnl.create("create veth", RouteNetlinkMessage::NewLink(link))?;
    let index = if_index(&net.host_if)?;
    add_address(&mut rtnl, index, net.gateway, net.prefix_len)?;
    link_up(&mut rtnl, index)
}

/// In the sandbox (its init, root of its user namespace): addresses `eth0`, brings it up and
/// routes everything through the host end. IPv6 is switched off: the host firewall only
/// forwards IPv4, and no link-local chatter should reach the host.
pub fn configure_sandbox_side(net: &Egress) -> Result<(), JailError> {
    for conf in ["all", "default", SANDBOX_IF] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
    }
    let mut rtnl = rtnl::Rtnl::open()?;
    let index = if_index(SANDBOX_IF)?;
    add_address(&mut rtnl, index, net.address, net.prefix_len)?;
    link_up(&mut rtnl, index)?;
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Static;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(net.gateway)));
    route.attributes.push(RouteAttribute::Oif(index));
    rtnl.create("add default route", RouteNetlinkMessage::NewRoute(route))
}
