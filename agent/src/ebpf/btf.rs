//! Kernel struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), for the
//! LSM programs: the Rust eBPF toolchain has no CO-RE relocations, so the programs read kernel
//! structs with `bpf_probe_read_kernel` at offsets computed here at load time.

use std::path::Path;

use agent_common::harden::KernelOffsets;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    bit_off: u32,
}

struct Type {
    kind: u32,
    name: u32,
    members: Vec<Member>,
}

/// The parsed type section (only what offset lookups need).
pub struct KernelBtf {
    strings: Vec<u8>,
    types: Vec<Type>,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, String> {
        let d = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&d)
            .ok_or_else(|| format!("{}: not a BTF blob this agent can read", path.display()))
    }

    fn parse(d: &[u8]) -> Option<Self> {
        if d.get(0..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hlen = u32_at(d, 4)? as usize;
        let (toff, tlen) = (u32_at(d, 8)? as usize, u32_at(d, 12)? as usize);
        let (soff, slen) = (u32_at(d, 16)? as usize, u32_at(d, 20)? as usize);
        let t = d.get(hlen + toff..hlen + toff + tlen)?;
        let strings = d.get(hlen + soff..hlen + soff + slen)?.to_vec();
        // Type ids start at 1; index 0 is the void placeholder.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            members: Vec::new(),
        }];
        let mut p = 0;
        while p < t.len() {
            let name = u32_at(t, p)?;
            let info = u32_at(t, p + 4)?;
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => p += 4,
                KIND_ARRAY => p += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(t, p + 8)?;
                        members.push(Member {
                            name: u32_at(t, p)?,
                            ty: u32_at(t, p + 4)?,
                            bit_off: if kflag { off & 0xff_ffff } else { off },
                        });
                        p += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => p += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => p += 12 * vlen,
                _ => {}
            }
            types.push(Type {
                kind,
                name,
                members,
            });
        }
        Some(Self { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// Byte offset of `field` in `struct name`, looking through anonymous struct/union members.
    /// An error names the member (`struct.field`) the running kernel does not have.
    pub fn offset(&self, name: &str, field: &str) -> Result<u32, MissingMember> {
        let missing = || MissingMember(format!("{name}.{field}"));
        let st = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name) == name.as_bytes())
            .ok_or_else(missing)?;
        self.member_bits(st, field.as_bytes(), 0)
            .map(|b| b / 8)
            .ok_or_else(missing)
    }

    fn member_bits(&self, id: usize, field: &[u8], depth: u32) -> Option<u32> {
        let t = self.types.get(id)?;
        if depth > 4 {
            return None;
        }
        for m in &t.members {
            if self.name(m.name) == field {
                return Some(m.bit_off);
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.resolve(m.ty as usize)?;
            if let Some(b) = self.member_bits(inner, field, depth + 1) {
                return Some(m.bit_off + b);
            }
        }
        None
    }

    /// Skips modifiers/typedefs (kinds without members and a type reference) to the struct or
    /// union an anonymous member names.
    fn resolve(&self, id: usize) -> Option<usize> {
        let t = self.types.get(id)?;
        matches!(t.kind, KIND_STRUCT | KIND_UNION).then_some(id)
    }

    /// Type id of the function `name` (BTF kind FUNC), e.g. an LSM hook's `bpf_lsm_<hook>`.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        const KIND_FUNC: u32 = 12;
        let i = self
            .types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name) == name.as_bytes())?;
        u32::try_from(i).ok()
    }

    /// Every offset the LSM programs use. A check gets all of its offsets or none: one missing
    /// member zeroes the whole group (the program then skips that check rather than read the
    /// wrong field), and is named in [`LsmOffsets::missing`].
    pub fn kernel_offsets(&self) -> LsmOffsets {
        let mut missing = Vec::new();
        let mut o = |s: &str, f: &str| self.offset(s, f).map_err(|m| missing.push(m)).ok();
        let task_tgid = o("task_struct", "tgid");
        let listen = (
            o("socket", "sk"),
            o("sock_common", "skc_family"),
            o("sock_common", "skc_rcv_saddr"),
            o("sock_common", "skc_v6_rcv_saddr"),
            o("sock_common", "skc_num"),
        );
        let mut offsets = KernelOffsets {
            task_tgid: task_tgid.unwrap_or(0),
            ..KernelOffsets::default()
        };
        if let (Some(sk), Some(family), Some(saddr), Some(v6), Some(num)) = listen {
            offsets.socket_sk = sk;
            offsets.skc_family = family;
            offsets.skc_rcv_saddr = saddr;
            offsets.skc_v6_rcv_saddr = v6;
            offsets.skc_num = num;
        }
        let file = [
            o("file", "f_inode"),
            o("file", "f_path"),
            o("path", "dentry"),
            o("dentry", "d_parent"),
            o("dentry", "d_inode"),
            o("inode", "i_ino"),
            o("inode", "i_sb"),
            o("super_block", "s_dev"),
        ];
        if let [
            Some(f_inode),
            Some(f_path),
            Some(dentry),
            Some(parent),
            Some(d_inode),
            Some(ino),
            Some(sb),
            Some(dev),
        ] = file
        {
            offsets.file_inode = f_inode;
            offsets.file_dentry = f_path + dentry;
            offsets.dentry_parent = parent;
            offsets.dentry_inode = d_inode;
            offsets.inode_ino = ino;
            offsets.inode_sb = sb;
            // Set last: the program treats 0 here as "the file check is off".
            offsets.sb_dev = dev;
        }
        LsmOffsets { offsets, missing }
    }
}

/// A kernel struct member (`struct.member`) the running kernel's BTF does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel BTF has no member {0}")]
pub struct MissingMember(pub String);

/// The offsets for [`agent_common::harden::HardenConfig::offsets`] and what could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsmOffsets {
    pub offsets: KernelOffsets,
    pub missing: Vec<MissingMember>,
}

impl LsmOffsets {
    /// The LSM protections switched off by the missing members.
    pub fn off(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if self.offsets.socket_sk == 0 {
            off.push("listen() on non-loopback addresses");
        }
        if self.offsets.task_tgid == 0 {
            off.push("self-protection against ptrace");
        }
        if self.offsets.sb_dev == 0 {
            off.push("self-protection of the CA key and state directory (file_open)");
        }
        off
    }
}

#[cfg(test)]
mod tests {
    use super::{KIND_STRUCT, KernelBtf, Member, MissingMember, Type};

    /// The structs of the file_open check: `(struct, member, byte offset)`.
    const FILE_MEMBERS: [(&str, &str, u32); 8] = [
        ("file", "f_inode", 32),
        ("file", "f_path", 64),
        ("path", "dentry", 8),
        ("dentry", "d_parent", 24),
        ("dentry", "d_inode", 48),
        ("inode", "i_ino", 64),
        ("inode", "i_sb", 40),
        ("super_block", "s_dev", 16),
    ];

    /// A BTF with `task_struct.tgid`, `socket.sk`, a `sock_common` holding `fields` (byte
    /// offsets 4, 8, ...) and the file_open structs with `file` of [`FILE_MEMBERS`].
    fn fake(fields: &[&str]) -> KernelBtf {
        fake_with(fields, &FILE_MEMBERS)
    }

    fn fake_with(fields: &[&str], file: &[(&str, &str, u32)]) -> KernelBtf {
        let mut strings = vec![0u8];
        let mut name = |s: &str| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let st = |n: u32, members: Vec<Member>| Type {
            kind: KIND_STRUCT,
            name: n,
            members,
        };
        let member = |n: u32, byte: u32| Member {
            name: n,
            ty: 0,
            bit_off: byte * 8,
        };
        let task = st(name("task_struct"), vec![member(name("tgid"), 40)]);
        let socket = st(name("socket"), vec![member(name("sk"), 24)]);
        let common: Vec<Member> = fields
            .iter()
            .zip(1u32..)
            .map(|(f, i)| member(name(f), 4 * i))
            .collect();
        let common = st(name("sock_common"), common);
        let void = Type {
            kind: 0,
            name: 0,
            members: Vec::new(),
        };
        let mut types = vec![void, task, socket, common];
        // Lookups take the first struct of a name, so each struct holds all of its members.
        let mut structs: Vec<(&str, Vec<Member>)> = Vec::new();
        for (s, f, at) in file {
            let m = member(name(f), *at);
            match structs.iter_mut().find(|(n, _)| n == s) {
                Some((_, members)) => members.push(m),
                None => structs.push((s, vec![m])),
            }
        }
        for (s, members) in structs {
            let n = name(s);
            types.push(st(n, members));
        }
        KernelBtf { types, strings }
    }

    #[test]
    fn a_missing_member_disables_its_whole_check_and_is_named() {
        let all = ["skc_family", "skc_rcv_saddr", "skc_v6_rcv_saddr", "skc_num"];
        let found = fake(&all).kernel_offsets();
        assert!(found.missing.is_empty());
        assert_eq!((found.offsets.socket_sk, found.offsets.skc_num), (24, 16));
        assert!(found.off().is_empty());
        // Without skc_num the listen check must not read offset 0 (skc_daddr) instead.
        let found = fake(&all[..3]).kernel_offsets();
        assert_eq!(found.missing, [MissingMember("sock_common.skc_num".into())]);
        let o = found.offsets;
        assert_eq!(
            (o.socket_sk, o.skc_family, o.skc_rcv_saddr, o.skc_num),
            (0, 0, 0, 0)
        );
        assert_eq!(o.task_tgid, 40, "the ptrace check keeps its offset");
        assert_eq!(found.off(), ["listen() on non-loopback addresses"]);
        let o = fake(&all).kernel_offsets().offsets;
        assert_eq!(
            (o.file_inode, o.file_dentry, o.dentry_parent, o.dentry_inode),
            (32, 72, 24, 48),
            "f_path + path.dentry is one offset"
        );
        assert_eq!((o.inode_ino, o.inode_sb, o.sb_dev), (64, 40, 16));
    }

    #[test]
    fn a_missing_file_member_turns_only_the_file_check_off() {
        let all = ["skc_family", "skc_rcv_saddr", "skc_v6_rcv_saddr", "skc_num"];
        let found = fake_with(&all, &FILE_MEMBERS[..7]).kernel_offsets();
        assert_eq!(found.missing, [MissingMember("super_block.s_dev".into())]);
        let o = found.offsets;
        assert_eq!((o.file_inode, o.inode_sb, o.sb_dev), (0, 0, 0));
        assert_eq!((o.task_tgid, o.skc_num), (40, 16));
        assert_eq!(
            found.off(),
            ["self-protection of the CA key and state directory (file_open)"]
        );
    }

    #[test]
    fn finds_nested_sock_common_fields_in_the_running_kernel() {
        let p = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !p.exists() {
            eprintln!("SKIP: no kernel BTF");
            return;
        }
        let btf = KernelBtf::load(p).unwrap();
        let found = btf.kernel_offsets();
        assert!(found.missing.is_empty(), "{:?}", found.missing);
        let o = found.offsets;
        // skc_daddr and skc_rcv_saddr share the first 8 bytes; the ports follow at 12.
        assert_eq!(o.skc_rcv_saddr, 4);
        assert_eq!(o.skc_num, 14);
        assert!(o.task_tgid > 0 && o.socket_sk > 0 && o.skc_v6_rcv_saddr > 0);
        assert!(o.file_inode > 0 && o.file_dentry > 0 && o.dentry_parent > 0);
        assert!(o.dentry_inode > 0 && o.inode_ino > 0 && o.inode_sb > 0 && o.sb_dev > 0);
        assert_eq!(
            btf.offset("task_struct", "no_such_field")
                .unwrap_err()
                .to_string(),
            "kernel BTF has no member task_struct.no_such_field"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(b"not btf at all, not btf at all").is_none());
    }
}
