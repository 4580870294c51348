//! Loading and attaching cgroup programs and pinning maps and links: one place for both the
//! interception programs (`interceptor.rs`) and the hardening ones (`harden.rs`), so the attach
//! mode and the pin error reporting cannot drift apart.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use agent_common::ProgKind;
use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, Program,
        SockOps, links::FdLink,
    },
};

use super::InterceptError;

/// The cgroup attach points our programs use (both sets of programs).
#[derive(Clone, Copy, Debug)]
pub(super) enum CgroupHook {
    /// `cgroup/sock_create`.
    Sock,
    /// `cgroup/connect4`, `cgroup/bind4`, ... (the hook is in the program's section).
    SockAddr,
    /// `sockops`.
    SockOps,
    /// `cgroup_skb/egress`.
    SkbEgress,
}

impl From<ProgKind> for CgroupHook {
    fn from(k: ProgKind) -> Self {
        match k {
            ProgKind::SockCreate => Self::Sock,
            ProgKind::SockAddr => Self::SockAddr,
            ProgKind::SockOps => Self::SockOps,
        }
    }
}

/// Loads `prog` and attaches it at the cgroup `cg`, returning the link to pin.
///
/// Single, not AllowMultiple: aya uses bpf_link_create, which rejects BPF_F_ALLOW_MULTI; cgroup
/// links are multi-attach anyway, so other tools' programs keep working next to ours.
pub(super) fn attach_cgroup(
    name: &'static str,
    prog: &mut Program,
    hook: CgroupHook,
    cg: &File,
) -> Result<FdLink, InterceptError> {
    let perr = |e| InterceptError::program(name, e);
    let lerr = |e| InterceptError::Link {
        path: PathBuf::from(name),
        source: Box::new(e),
    };
    let mode = CgroupAttachMode::Single;
    Ok(match hook {
        CgroupHook::Sock => {
            let p: &mut CgroupSock = prog.try_into().map_err(perr)?;
            p.load().map_err(perr)?;
            let id = p.attach(cg, mode).map_err(perr)?;
            p.take_link(id).map_err(perr)?.try_into().map_err(lerr)?
        }
        CgroupHook::SockAddr => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(perr)?;
            p.load().map_err(perr)?;
            let id = p.attach(cg, mode).map_err(perr)?;
            p.take_link(id).map_err(perr)?.try_into().map_err(lerr)?
        }
        CgroupHook::SockOps => {
            let p: &mut SockOps = prog.try_into().map_err(perr)?;
            p.load().map_err(perr)?;
            let id = p.attach(cg, mode).map_err(perr)?;
            p.take_link(id).map_err(perr)?.try_into().map_err(lerr)?
        }
        CgroupHook::SkbEgress => {
            let p: &mut CgroupSkb = prog.try_into().map_err(perr)?;
            p.load().map_err(perr)?;
            let id = p
                .attach(cg, CgroupSkbAttachType::Egress, mode)
                .map_err(perr)?;
            p.take_link(id).map_err(perr)?.try_into().map_err(lerr)?
        }
    })
}

/// The program `name` of the loaded object.
pub(super) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Program, InterceptError> {
    ebpf.program_mut(name).ok_or(InterceptError::Missing {
        what: "program",
        name,
    })
}

/// Pins each map of `names` as `maps_dir/<name>`.
pub(super) fn pin_maps(
    ebpf: &mut Ebpf,
    names: &[&'static str],
    maps_dir: &Path,
) -> Result<(), InterceptError> {
    for &name in names {
        let map = ebpf
            .map(name)
            .ok_or(InterceptError::Missing { what: "map", name })?;
        let path = maps_dir.join(name);
        map.pin(&path).map_err(|e| InterceptError::Pin {
            path,
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Pins `link` as `links_dir/<name>`: the pin keeps the program attached after the agent exits.
pub(super) fn pin_link(
    link: FdLink,
    links_dir: &Path,
    name: &'static str,
) -> Result<(), InterceptError> {
    let path = links_dir.join(name);
    link.pin(&path).map_err(|e| InterceptError::Pin {
        path,
        source: Box::new(e),
    })?;
    Ok(())
}
