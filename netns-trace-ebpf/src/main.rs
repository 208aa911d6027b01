//! netns-trace kernel side: one module per hook family. Every program is a
//! thin entry point calling a `try_*`/`on_*` function; failures are counted
//! in the per-CPU `STATS` map (see `kread`), never swallowed.
#![no_std]
#![no_main]

mod degraded;
mod holders;
mod kread;
mod lifecycle;
mod maps;
mod reftrack;
mod rtnl;
mod scan;
mod sockets;
mod tasks;
mod unregister;
mod watch;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_read_kernel and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
