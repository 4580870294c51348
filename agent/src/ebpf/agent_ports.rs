//! The agent-port map (`IRON_AGENT_PORTS`): the agent's own listening ports. The programs record
//! who opens a TCP connection to one of them on loopback (flagged direct, with the task's mode),
//! so a workload that connects to a listener itself is identified the way the kernel knows it,
//! not from `/proc/net/tcp`. The bind hook also reads it: governed tasks may not bind these
//! ports, so nobody can squat one while the agent is down.

use std::collections::{BTreeMap, HashMap as StdMap};
use std::path::Path;

use agent_common::{MAP_AGENT_PORTS, PIN_MAPS_SUBDIR, agent_port};
use aya::maps::{HashMap, Map, MapData};
use parking_lot::Mutex;

use super::InterceptError;

/// One listening port of the agent and its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPort {
    /// HTTP, HTTPS or tunnel listener.
    Tcp(u16),
    /// The DNS listener (UDP and TCP on the same port).
    Dns(u16),
}

/// Who owns a set of entries: the map holds the union of every group's ports, so the
/// PostgreSQL proxy can move its listener without touching (or dropping) the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortGroup {
    /// HTTP, HTTPS, DNS, tunnel, management and metrics listeners (fixed at start).
    Listeners,
    /// The PostgreSQL proxy listener (follows its reconfigurations).
    Postgres,
}

/// The pinned map, opened by path.
pub struct AgentPortTable {
    map: Mutex<HashMap<MapData, u32, u32>>,
    groups: Mutex<BTreeMap<PortGroup, Vec<AgentPort>>>,
}

impl std::fmt::Debug for AgentPortTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPortTable").finish_non_exhaustive()
    }
}

/// The map contents for `ports`: port → protocol bits.
pub fn port_bits(ports: &[AgentPort]) -> StdMap<u32, u32> {
    let mut out: StdMap<u32, u32> = StdMap::new();
    for p in ports {
        let (port, bits) = match *p {
            AgentPort::Tcp(p) => (p, agent_port::TCP),
            AgentPort::Dns(p) => (p, agent_port::TCP | agent_port::UDP),
        };
        if port != 0 {
            *out.entry(u32::from(port)).or_default() |= bits;
        }
    }
    out
}

impl AgentPortTable {
    pub fn open(pin_dir: &Path) -> Result<Self, InterceptError> {
        let path = pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_AGENT_PORTS);
        if !path.exists() {
            return Err(InterceptError::NotInstalled { path });
        }
        let data = MapData::from_pin(&path).map_err(|e| InterceptError::map(MAP_AGENT_PORTS, e))?;
        let map = Map::from_map_data(data).map_err(|e| InterceptError::map(MAP_AGENT_PORTS, e))?;
        Ok(Self {
            map: Mutex::new(
                HashMap::try_from(map).map_err(|e| InterceptError::map(MAP_AGENT_PORTS, e))?,
            ),
            groups: Mutex::new(BTreeMap::new()),
        })
    }

    /// Sets `group`'s ports and makes the map hold exactly every group's ports (entries of an
    /// earlier agent process not set again by this one are removed).
    pub fn set(&self, group: PortGroup, ports: &[AgentPort]) -> Result<(), InterceptError> {
        let mut groups = self.groups.lock();
        groups.insert(group, ports.to_vec());
        let all: Vec<AgentPort> = groups.values().flatten().copied().collect();
        self.replace(&all)
    }

    /// Makes the map hold exactly `ports`. New entries are written before stale ones go.
    fn replace(&self, ports: &[AgentPort]) -> Result<(), InterceptError> {
        let want = port_bits(ports);
        let mut map = self.map.lock();
        for (k, v) in &want {
            map.insert(k, v, 0)
                .map_err(|e| InterceptError::map(MAP_AGENT_PORTS, e))?;
        }
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(k))
            .collect();
        for k in stale {
            match map.remove(&k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(InterceptError::map(MAP_AGENT_PORTS, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_ports_carry_both_protocols_and_zero_is_skipped() {
        let bits = port_bits(&[
            AgentPort::Tcp(8080),
            AgentPort::Dns(8053),
            AgentPort::Tcp(0),
        ]);
        assert_eq!(bits.get(&8080), Some(&agent_port::TCP));
        assert_eq!(bits.get(&8053), Some(&(agent_port::TCP | agent_port::UDP)));
        assert_eq!(bits.len(), 2);
    }
}
