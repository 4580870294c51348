//! Original destination and identity of connections accepted from a redirect: the kernel
//! side of [`OrigDstLookup`] (the trait and [`ConnOrigin`] live in `identify/`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use agent_common::{
    AF_INET, MAP_ORIG_BY_TUPLE, OrigDst, PIN_MAPS_SUBDIR, SockKey, mode, orig_flags,
};
use aya::maps::{HashMap, Map, MapData};
use parking_lot::Mutex;

use super::{InterceptError, sys};
use crate::identify::{
    CgroupId, ClientAddr, ConnOrigin, LocalAddr, OrigDstLookup, PeerMode, PolicyId, Route, Uid,
};

/// [`OrigDstLookup`] over the pinned `IRON_ORIG_BY_TUPLE` map.
pub struct OrigDstTable {
    map: Mutex<HashMap<MapData, SockKey, OrigDst>>,
}

impl std::fmt::Debug for OrigDstTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrigDstTable").finish_non_exhaustive()
    }
}

impl OrigDstTable {
    /// Opens the map pinned under `pin_dir` (e.g. from a process that only proxies).
    pub fn open(pin_dir: &Path) -> Result<Self, InterceptError> {
        let path = pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_ORIG_BY_TUPLE);
        if !path.exists() {
            return Err(InterceptError::NotInstalled { path });
        }
        let data =
            MapData::from_pin(&path).map_err(|e| InterceptError::map(MAP_ORIG_BY_TUPLE, e))?;
        Self::from_map(
            Map::from_map_data(data).map_err(|e| InterceptError::map(MAP_ORIG_BY_TUPLE, e))?,
        )
    }

    pub(crate) fn from_map(map: Map) -> Result<Self, InterceptError> {
        let map = HashMap::try_from(map).map_err(|e| InterceptError::map(MAP_ORIG_BY_TUPLE, e))?;
        Ok(Self {
            map: Mutex::new(map),
        })
    }
}

impl OrigDstLookup for OrigDstTable {
    fn lookup(&self, client: ClientAddr, local: LocalAddr) -> Option<ConnOrigin> {
        let key = sock_key(client, local);
        let mut map = self.map.lock();
        let orig = map.get(&key, 0).ok()?;
        // Best effort: the map is LRU, so an entry that cannot be removed ages out anyway.
        let _ = map.remove(&key);
        Some(origin(&orig))
    }
}

/// The map key for an accepted connection (see [`SockKey`]).
pub fn sock_key(client: ClientAddr, local: LocalAddr) -> SockKey {
    let (peer, local) = (client.0, local.0);
    SockKey {
        src_addr: addr_words(peer.ip()),
        dst_addr: addr_words(local.ip()),
        src_port: peer.port(),
        dst_port: local.port(),
    }
}

/// IPv4 as `::ffff:a.b.c.d`, both as network-order words.
fn addr_words(ip: IpAddr) -> [u32; 4] {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    sys::words(v6.octets())
}

pub(crate) fn origin(o: &OrigDst) -> ConnOrigin {
    let b = sys::bytes(o.addr);
    let ip = if o.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let len = o.comm.iter().position(|&c| c == 0).unwrap_or(o.comm.len());
    ConnOrigin {
        orig_dst: SocketAddr::new(ip, o.port),
        uid: Uid(o.uid),
        pid: o.pid,
        comm: String::from_utf8_lossy(&o.comm[..len]).into_owned(),
        policy_id: PolicyId(o.policy_id),
        cgroup_id: CgroupId(o.cgroup_id),
        route: route(o.flags),
    }
}

/// Decodes [`OrigDst::flags`]. An unknown mode of a direct peer counts as denied.
fn route(flags: u32) -> Route {
    if flags & orig_flags::DIRECT == 0 {
        return Route::Redirected;
    }
    Route::Direct(match (flags >> orig_flags::MODE_SHIFT) & 0xff {
        mode::REDIRECT => PeerMode::Governed,
        mode::EXEMPT => PeerMode::Exempt,
        _ => PeerMode::Denied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_mapped_peers_give_the_same_key() {
        let a = sock_key(
            ClientAddr("127.0.0.1:5000".parse().unwrap()),
            LocalAddr("127.0.0.1:80".parse().unwrap()),
        );
        let b = sock_key(
            ClientAddr("[::ffff:127.0.0.1]:5000".parse().unwrap()),
            LocalAddr("[::ffff:127.0.0.1]:80".parse().unwrap()),
        );
        assert_eq!(a, b);
        // Network order in memory: 127.0.0.1 is bytes 7f 00 00 01.
        assert_eq!(a.src_addr[3].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(a.src_addr[2].to_ne_bytes(), [0, 0, 0xff, 0xff]);
    }

    #[test]
    fn origin_decodes_v4_v6_and_comm() {
        let mut o = OrigDst {
            addr: sys::words(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets()),
            port: 80,
            family: AF_INET,
            uid: 1001,
            pid: 42,
            ..Default::default()
        };
        o.comm[..4].copy_from_slice(b"curl");
        let c = origin(&o);
        assert_eq!(c.orig_dst, "192.0.2.1:80".parse().unwrap());
        assert_eq!(c.comm, "curl");
        assert_eq!(c.route, Route::Redirected);
        o.flags = orig_flags::DIRECT | (mode::DENY_ALL << orig_flags::MODE_SHIFT);
        assert_eq!(origin(&o).route, Route::Direct(PeerMode::Denied));
        o.flags = orig_flags::DIRECT | (mode::EXEMPT << orig_flags::MODE_SHIFT);
        assert_eq!(origin(&o).route, Route::Direct(PeerMode::Exempt));
        o.flags = orig_flags::DIRECT;
        assert_eq!(origin(&o).route, Route::Direct(PeerMode::Governed));
        o.family = agent_common::AF_INET6;
        o.addr = sys::words("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(origin(&o).orig_dst, "[2001:db8::1]:80".parse().unwrap());
    }
}
