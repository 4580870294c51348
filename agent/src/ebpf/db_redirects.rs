//! The database-destination map (`IRON_DB_REDIRECTS`): governed TCP connects to a configured
//! PostgreSQL upstream go to the proxy listener instead of being denied.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use agent_common::{DbRedirect, DestKey, Endpoint4, Endpoint6, MAP_DB_REDIRECTS, PIN_MAPS_SUBDIR};
use aya::maps::{HashMap, Map, MapData};
use parking_lot::Mutex;

use super::{InterceptError, sys};

/// The pinned map, opened by path (like the original-destination table).
pub struct DbRedirectTable {
    map: Mutex<HashMap<MapData, DestKey, DbRedirect>>,
}

impl std::fmt::Debug for DbRedirectTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbRedirectTable").finish_non_exhaustive()
    }
}

/// The map key for a destination: IPv4 (and IPv4-mapped IPv6) in mapped form.
pub fn dest_key(dest: SocketAddr) -> DestKey {
    let ip = match dest.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6, |v4| v4.to_ipv6_mapped()),
    };
    DestKey {
        addr: sys::words(ip.octets()),
        port: dest.port(),
        _pad: 0,
    }
}

/// Redirect targets for a bound listener. An unspecified bind is reached on loopback; IPv6
/// sockets reach an IPv4 listener through its IPv4-mapped address.
pub fn listener_targets(addr: SocketAddr) -> (Option<SocketAddrV4>, Option<SocketAddrV6>) {
    let port = addr.port();
    match addr.ip() {
        IpAddr::V4(ip) => {
            let ip = if ip.is_unspecified() {
                Ipv4Addr::LOCALHOST
            } else {
                ip
            };
            (
                Some(SocketAddrV4::new(ip, port)),
                Some(SocketAddrV6::new(ip.to_ipv6_mapped(), port, 0, 0)),
            )
        }
        IpAddr::V6(ip) => {
            let ip = if ip.is_unspecified() {
                Ipv6Addr::LOCALHOST
            } else {
                ip
            };
            let v4 = ip.to_ipv4_mapped().map(|v4| SocketAddrV4::new(v4, port));
            (v4, Some(SocketAddrV6::new(ip, port, 0, 0)))
        }
    }
}

impl DbRedirectTable {
    pub fn open(pin_dir: &Path) -> Result<Self, InterceptError> {
        let path = pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_DB_REDIRECTS);
        if !path.exists() {
            return Err(InterceptError::NotInstalled { path });
        }
        let data =
            MapData::from_pin(&path).map_err(|e| InterceptError::map(MAP_DB_REDIRECTS, e))?;
        let map = Map::from_map_data(data).map_err(|e| InterceptError::map(MAP_DB_REDIRECTS, e))?;
        Ok(Self {
            map: Mutex::new(
                HashMap::try_from(map).map_err(|e| InterceptError::map(MAP_DB_REDIRECTS, e))?,
            ),
        })
    }

    /// Makes the map hold exactly `dests`, each sent to `listener` (its IPv4 and IPv6 forms).
    /// New entries are written before stale ones are removed.
    pub fn replace(
        &self,
        listener: (Option<SocketAddrV4>, Option<SocketAddrV6>),
        dests: &[SocketAddr],
    ) -> Result<(), InterceptError> {
        let value = DbRedirect {
            ep4: listener.0.map_or(Endpoint4::default(), |a| Endpoint4 {
                addr: u32::from_ne_bytes(a.ip().octets()),
                port: a.port(),
                _pad: 0,
            }),
            ep6: listener.1.map_or(Endpoint6::default(), |a| Endpoint6 {
                addr: sys::words(a.ip().octets()),
                port: a.port(),
                _pad: 0,
            }),
        };
        let keep: HashSet<DestKey> = dests.iter().map(|d| dest_key(*d)).collect();
        let mut map = self.map.lock();
        for k in &keep {
            map.insert(k, value, 0)
                .map_err(|e| InterceptError::map(MAP_DB_REDIRECTS, e))?;
        }
        let stale: Vec<DestKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for k in stale {
            match map.remove(&k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(InterceptError::map(MAP_DB_REDIRECTS, e)),
            }
        }
        Ok(())
    }

    /// Number of destinations currently redirected.
    pub fn len(&self) -> usize {
        self.map.lock().keys().filter_map(Result::ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
