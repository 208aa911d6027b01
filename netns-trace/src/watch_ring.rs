//! The watchpoint fallback for kernels that refuse BPF on breakpoint
//! events (or `--watch-via-perf-ring`): each CPU's breakpoint is opened as
//! a sampling event with its own mmap'd ring, read here in userspace (one
//! sample per write, with the writer's kernel call chain). A sample has no
//! counter value, so the sign comes from the writing instruction
//! (`netns_trace::insn`), whose bytes `watch_text` reads once per IP.
use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    sync::atomic::{fence, Ordering},
};

use crate::{
    probes::program,
    trace::take,
    watch::{perf_open, PerfEventAttr},
};
use aya::{
    maps::{Array as BpfArray, MapData},
    programs::RawTracePoint,
    Ebpf,
};
use netns_trace::insn;

/// `watch_text`'s read length (netns-trace-ebpf/src/watch.rs).
const TEXT_LEN: usize = 16;
/// Data pages per CPU ring (a power of two): 32 KiB at 4 KiB pages, about
/// 300 samples with full call chains between two reads.
const DATA_PAGES: usize = 8;
/// `struct perf_event_mmap_page`: data_head, data_tail, data_offset and
/// data_size.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

const FLAG_EXCLUDE_CALLCHAIN_USER: u64 = 1 << 22;
const FLAG_USE_CLOCKID: u64 = 1 << 25;

/// One CPU's breakpoint as a sampling event, and its mmap'd ring.
pub struct SampleRing {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_off: usize,
    data_len: usize,
}

impl SampleRing {
    /// Opens (disabled) a write breakpoint on the 4-byte counter at `addr`
    /// on `cpu`, sampling every hit with its kernel call chain, and maps
    /// its ring. Timestamps are CLOCK_MONOTONIC, the clock of the BPF
    /// events and of the seed.
    pub fn open(cpu: i32, addr: u64) -> Result<Self, String> {
        let mut attr = PerfEventAttr::write_breakpoint(addr);
        attr.sample_type = netns_trace::perf_ring::SAMPLE_TYPE;
        attr.flags |= FLAG_EXCLUDE_CALLCHAIN_USER | FLAG_USE_CLOCKID;
        attr.clockid = libc::CLOCK_MONOTONIC;
        let fd = perf_open(&attr, cpu)?;
        // SAFETY: plain sysconf query.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_len = (1 + DATA_PAGES) * page;
        // SAFETY: maps the perf fd's ring (meta page + data pages) shared;
        // unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "mapping the breakpoint's perf ring: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut ring = Self {
            fd,
            base: base.cast(),
            map_len,
            data_off: page,
            data_len: DATA_PAGES * page,
        };
        // Kernels since 4.1 say where the data is; trust it if it fits.
        let (off, size) = (ring.meta(DATA_OFFSET), ring.meta(DATA_SIZE));
        if off != 0 && size != 0 && off.saturating_add(size) <= map_len as u64 {
            (ring.data_off, ring.data_len) = (off as usize, size as usize);
        }
        Ok(ring)
    }

    pub fn enable(&self) -> Result<(), String> {
        crate::watch::enable(&self.fd)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn meta(&self, at: usize) -> u64 {
        // SAFETY: `at` is a u64 field inside the mapped meta page.
        unsafe { std::ptr::read_volatile(self.base.add(at).cast::<u64>()) }
    }

    /// Copies out the bytes not read yet and gives them back to the
    /// kernel. None when the kernel's head makes no sense (everything
    /// unread is skipped).
    pub fn take(&mut self) -> Option<Vec<u8>> {
        let head = self.meta(DATA_HEAD);
        // The records up to head are complete once head is seen.
        fence(Ordering::Acquire);
        let tail = self.meta(DATA_TAIL);
        if head == tail {
            return Some(Vec::new());
        }
        let spans = netns_trace::perf_ring::spans(self.data_len, tail, head);
        let mut bytes = Vec::new();
        for &(at, len) in spans.iter().flatten() {
            let start = bytes.len();
            bytes.resize(start + len, 0);
            // SAFETY: at + len <= data_len (spans), inside the mapping;
            // the kernel does not write there until tail moves past it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.add(self.data_off + at),
                    bytes[start..].as_mut_ptr(),
                    len,
                )
            };
        }
        // Our reads are done before the kernel may overwrite them.
        fence(Ordering::SeqCst);
        // SAFETY: data_tail is ours to write, inside the meta page.
        unsafe { std::ptr::write_volatile(self.base.add(DATA_TAIL).cast::<u64>(), head) };
        spans.map(|_| bytes)
    }
}

impl Drop for SampleRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open, not used after this.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// The sign of a write from the instruction before a sample's IP, read by
/// `watch_text` (BPF_PROG_TEST_RUN) once per distinct IP.
pub struct TextReader {
    prog_fd: RawFd,
    text: BpfArray<MapData, [u8; TEXT_LEN]>,
    cache: HashMap<u64, Option<i32>>,
}

impl TextReader {
    pub fn load(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        use std::os::fd::AsFd as _;
        let prog: &mut RawTracePoint = program(ebpf, "watch_text")?.try_into()?;
        prog.load()?;
        let prog_fd = prog.fd()?.as_fd().as_raw_fd();
        Ok(Self {
            prog_fd,
            text: take(ebpf, "WATCH_TEXT")?,
            cache: HashMap::new(),
        })
    }

    /// The delta of the write whose next instruction is at `ip`; None when
    /// it cannot be read or decoded.
    pub fn delta(&mut self, ip: u64) -> Option<i32> {
        if let Some(&d) = self.cache.get(&ip) {
            return d;
        }
        let d = match self.read(ip) {
            Ok(bytes) => insn::write_delta(&bytes),
            Err(e) => {
                log::debug!("kernel text before {ip:#x}: {e}");
                None
            }
        };
        if d.is_none() {
            log::debug!("write at {ip:#x}: sign not decoded");
        }
        self.cache.insert(ip, d);
        d
    }

    fn read(&self, ip: u64) -> Result<[u8; TEXT_LEN], String> {
        match crate::testrun::run(self.prog_fd, &[ip])? {
            0 => self.text.get(&0, 0).map_err(|e| format!("WATCH_TEXT: {e}")),
            _ => Err("the kernel read failed".into()),
        }
    }
}

/// An epoll set of every ring's fd: one fd the tokio loop waits on.
pub struct RingPoll(OwnedFd);

impl RingPoll {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        Ok(Self(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    /// Another handle on the same set, for the tokio loop to wait on.
    pub fn handle(&self) -> std::io::Result<OwnedFd> {
        self.0.try_clone()
    }

    /// Wakes the set's waiters when `ring` has samples (closing the
    /// ring's fd takes it out again).
    pub fn add(&self, ring: &SampleRing) -> Result<(), String> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: valid fds and event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                ring.raw_fd(),
                &mut ev,
            )
        };
        if rc != 0 {
            return Err(format!(
                "polling the breakpoint's perf ring: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Takes the pending readiness (the rings are read next, so a sample
    /// arriving after this wakes the loop again).
    pub fn consume(&self) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        loop {
            // SAFETY: valid buffer of 16 events; timeout 0.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 16, 0) };
            if n < 16 {
                break;
            }
        }
    }
}
