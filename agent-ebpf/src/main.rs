//! eBPF programs for transparent interception. This crate is a placeholder until the eBPF
//! interception issue lands: it is excluded from the workspace build (it targets
//! `bpfel-unknown-none` with nightly and `-Z build-std=core`).
#![no_std]
#![no_main]

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
