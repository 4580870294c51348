//! `BPF_LINK_CREATE` for the setsockopt program and `BPF_OBJ_PIN` of the link: aya 0.14 cannot
//! turn a `CgroupSockoptLink` into a pinnable `FdLink`, so this does the two system calls itself.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

const BPF_OBJ_PIN: nix::libc::c_long = 6;
const BPF_LINK_CREATE: nix::libc::c_long = 28;
/// `enum bpf_attach_type`: BPF_CGROUP_SETSOCKOPT.
pub const BPF_CGROUP_SETSOCKOPT: u32 = 22;

const BPF_PROG_LOAD: nix::libc::c_long = 5;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_MAC: u32 = 27;

/// Loads (and immediately closes) `r0 = 0; exit` as an LSM program for the hook with BTF id
/// `btf_id`: whether this process may load LSM programs at all.
#[allow(unsafe_code)]
pub fn probe_lsm_load(btf_id: u32) -> io::Result<()> {
    // BPF_MOV64_IMM(r0, 0); BPF_EXIT.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    let put32 =
        |a: &mut [u8; 128], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8; 128], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    // union bpf_attr, prog_load: prog_type, insn_cnt, insns, license, ...,
    // expected_attach_type (68), attach_btf_id (108).
    put32(&mut attr, 0, BPF_PROG_TYPE_LSM);
    put32(&mut attr, 4, 2);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 68, BPF_LSM_MAC);
    put32(&mut attr, 108, btf_id);
    // SAFETY: bpf(2) reads the attribute buffer and the instruction and license buffers it
    // points to, all alive for the call.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh program fd nothing else owns; dropping it unloads the program.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

/// Attaches `prog` to the cgroup `cg` with a bpf_link and pins the link at `path` (the link fd
/// is closed afterwards; the pin keeps the program attached).
#[allow(unsafe_code)]
pub fn attach_and_pin(
    prog: BorrowedFd<'_>,
    cg: BorrowedFd<'_>,
    attach_type: u32,
    path: &Path,
) -> io::Result<()> {
    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags (then zeroes).
    let mut attr = [0u32; 32];
    attr[0] = prog.as_raw_fd() as u32;
    attr[1] = cg.as_raw_fd() as u32;
    attr[2] = attach_type;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of the zero-initialised buffer.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh link fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("pin path contains NUL"))?;
    // obj_pin: pathname (u64 pointer), bpf_fd, file_flags.
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    attr[1] = link.as_raw_fd() as u64;
    // SAFETY: as above; `c` outlives the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_OBJ_PIN,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
