//! A small synchronous rtnetlink client: exactly the requests the pod network
//! needs, over one `NETLINK_ROUTE` socket.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, for its whole life. A socket made on a short-lived thread that
//! entered a pod's namespace therefore configures that namespace from any
//! thread afterwards, with no `setns` on the caller's thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{
    DecodeError, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    LinkMessageBuffer,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// `RTM_NEWLINK`, and the link attributes [`decode_link`] reads
/// (linux/rtnetlink.h, linux/if_link.h).
const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// Size of the receive buffer; the kernel fills dump replies up to 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// What the pod network needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) up: bool,
    /// The bridge (or other controller) the interface is a port of.
    pub(crate) controller: Option<u32>,
    /// The `IFLA_INFO_KIND`, e.g. `bridge` or `veth`; empty for plain devices.
    pub(crate) kind: String,
}

/// An IPv4 route of the main table, reduced to what is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) destination: Ipv4Addr,
    pub(crate) prefix_len: u8,
    pub(crate) gateway: Option<Ipv4Addr>,
    pub(crate) oif: Option<u32>,
}

/// One rtnetlink socket and its request sequence.
pub(crate) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// `true` for the errors meaning "that object does not exist".
pub(crate) fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EADDRNOTAVAIL)
    )
}

/// `true` when the kernel says the object exists already.
pub(crate) fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

fn up_flags() -> LinkFlags {
    LinkFlags::Up
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            sequence: 0,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    /// Sends `message` and collects the replies: for a dump everything up to
    /// `NLMSG_DONE`, otherwise the replies up to the ack.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        self.exchange(message, flags, |bytes| {
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                Ok(m) => {
                    if let NetlinkPayload::InnerMessage(inner) = m.payload {
                        replies.push(inner);
                    }
                    Ok(())
                }
                Err(e) if dump => {
                    // One object we cannot decode (a newer attribute
                    // format) must not hide the others.
                    tracing::debug!(error = %e, "skipping undecodable netlink dump entry");
                    Ok(())
                }
                Err(e) => Err(io::Error::other(format!(
                    "cannot decode netlink reply: {e}"
                ))),
            }
        })?;
        Ok(replies)
    }

    /// Sends `message` and hands each reply to `each`, as a whole netlink
    /// message, up to `NLMSG_DONE` for a dump and up to the ack otherwise;
    /// an error the kernel answers is returned as such.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        loop {
            let received = {
                let mut slice = &mut self.buffer[..];
                self.socket.recv(&mut slice, libc::MSG_TRUNC)?
            };
            if received > self.buffer.len() {
                return Err(io::Error::other(format!(
                    "netlink reply of {received} bytes exceeds the {RECV_BUFFER} byte buffer"
                )));
            }
            let mut offset = 0;
            while offset < received {
                let bytes = &self.buffer[offset..received];
                let length = ne_u32(bytes)
                    .ok_or_else(|| io::Error::other("truncated netlink message"))?
                    as usize;
                if length < 16 || length > bytes.len() {
                    return Err(io::Error::other("malformed netlink message length"));
                }
                let bytes = &bytes[..length];
                offset += (length + 3) & !3;
                let header = NetlinkBuffer::new(bytes);
                if header.sequence_number() != sequence {
                    continue;
                }
                match header.message_type() {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        // An ack is an error message with code 0.
                        let error = ErrorBuffer::new_checked(header.payload()).map_err(|e| {
                            io::Error::other(format!("cannot decode netlink error: {e}"))
                        })?;
                        return match error.code() {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(()),
                        };
                    }
                    _ => each(bytes)?,
                }
            }
        }
    }

    /// The interface called `name`, if there is one.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(message)
    }

    /// The name of the interface with index `index`, if there is one.
    pub(crate) fn link_name(&mut self, index: u32) -> io::Result<Option<String>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        Ok(self.get_link(message)?.map(|l| l.name))
    }

    /// The interface a `RTM_GETLINK` names, if there is one.
    fn get_link(&mut self, message: LinkMessage) -> io::Result<Option<Link>> {
        let mut link = None;
        let found = self.exchange(RouteNetlinkMessage::GetLink(message), 0, |bytes| {
            let header = NetlinkBuffer::new(bytes);
            if link.is_none() && header.message_type() == RTM_NEWLINK {
                link = Some(decode_link(header.payload())?);
            }
            Ok(())
        });
        match found {
            Ok(()) => Ok(link),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge that is up, with a fixed MAC address (otherwise a
    /// bridge takes the lowest MAC of its ports, and pods' ARP entries for
    /// the gateway go stale whenever that port leaves).
    pub(crate) fn create_bridge(
        &mut self,
        name: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.flags = up_flags();
        message.header.change_mask = up_flags();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            // STP is off by default: ports forward at once. Keep it so.
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::ForwardDelay(0)])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Brings the interface with `index` up.
    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = up_flags();
        message.header.change_mask = up_flags();
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Creates a veth pair: `host_name` here, up, a port of `bridge_index`;
    /// its peer `peer_name` directly in the namespace `peer_netns_fd`, down.
    pub(crate) fn create_veth(
        &mut self,
        host_name: &str,
        bridge_index: u32,
        peer_name: &str,
        peer_netns_fd: RawFd,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        // The peer cannot be created up: while the pair is being made, the
        // peer has no peer yet and opening it fails with ENOTCONN.
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_owned()));
        peer.attributes.push(LinkAttribute::NetNsFd(peer_netns_fd));
        let mut host = LinkMessage::default();
        host.header.flags = up_flags();
        host.header.change_mask = up_flags();
        host.attributes
            .push(LinkAttribute::IfName(host_name.to_owned()));
        host.attributes
            .push(LinkAttribute::Controller(bridge_index));
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
            host.attributes.push(LinkAttribute::Mtu(mtu));
        }
        host.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(host),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes the interface called `name`; `false` if there was none.
    pub(crate) fn delete_link(&mut self, name: &str) -> io::Result<bool> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `ip/prefix_len` to the interface `index`; `Ok` if it is there
    /// already.
    pub(crate) fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message
            .attributes
            .push(AddressAttribute::Local(IpAddr::V4(ip)));
        message
            .attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast));
        match self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses (with prefix length) on interface `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let prefix_len = a.header.prefix_len;
                    a.attributes.into_iter().find_map(|attr| match attr {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some((ip, prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds the default route via `gateway` out of interface `index`; `Ok`
    /// if a default route exists already.
    pub(crate) fn add_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        message.attributes.push(RouteAttribute::Oif(index));
        match self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 routes of the main table.
    pub(crate) fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.header.kind == RouteType::Unicast =>
                {
                    let mut route = Route {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix_len: r.header.destination_prefix_length,
                        gateway: None,
                        oif: None,
                    };
                    for attr in r.attributes {
                        match attr {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                                route.destination = d
                            }
                            RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                                route.gateway = Some(g)
                            }
                            RouteAttribute::Oif(i) => route.oif = Some(i),
                            _ => {}
                        }
                    }
                    Some(route)
                }
                _ => None,
            })
            .collect())
    }
}

/// What a [`Link`] holds, read from an `RTM_NEWLINK` message's payload
/// alone. A full decode parses every attribute, and netlink-packet-route
/// formats the whole `IFLA_INFO_DATA` of a bridge (dozens of attributes)
/// into an error context once per attribute, on every lookup.
fn decode_link(payload: &[u8]) -> io::Result<Link> {
    let malformed = |e: DecodeError| io::Error::other(format!("cannot decode netlink link: {e}"));
    let message = LinkMessageBuffer::new_checked(payload).map_err(malformed)?;
    let mut link = Link {
        index: message.link_index(),
        name: String::new(),
        up: LinkFlags::from_bits_retain(message.flags()).contains(LinkFlags::Up),
        controller: None,
        kind: String::new(),
    };
    for attribute in message.attributes() {
        let attribute = attribute.map_err(malformed)?;
        match attribute.kind() {
            IFLA_IFNAME => link.name = c_string(attribute.value()),
            IFLA_MASTER => {
                let index = ne_u32(attribute.value())
                    .ok_or_else(|| io::Error::other("malformed IFLA_MASTER"))?;
                link.controller = (index != 0).then_some(index);
            }
            IFLA_LINKINFO => {
                for info in NlasIterator::new(attribute.value()) {
                    let info = info.map_err(malformed)?;
                    if info.kind() == IFLA_INFO_KIND {
                        link.kind = c_string(info.value());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

/// The native-endian `u32` that `bytes` start with.
fn ne_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A netlink string attribute: text up to its NUL.
fn c_string(value: &[u8]) -> String {
    let text = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}
