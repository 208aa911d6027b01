//! Decoding of ring-buffer records into typed events.
//!
//! The wire format is the `#[repr(C)]` structs of `netns_trace_common`.
//! A record that is short, of unknown kind or carries an impossible field
//! value is an error to be counted, never a panic: a loader built from a
//! different commit than its eBPF object must degrade, not crash.

use std::fmt;
use std::mem::size_of;

use netns_trace_common::{
    create_source, event_size, kind, obj_kind, phase, release_reason, tracker_op, BlockedTask,
    CleanupNet, DevWait, Header, NetnsCreate, NetnsDestroy, ObjHold, ObjRelease, RtnlUnlock,
    SockState, TrackerCall, TrackerStart, WatchDone, WatchHit, WatchTarget,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NetnsCreate(NetnsCreate),
    NetnsDestroy(NetnsDestroy),
    CleanupNet(CleanupNet),
    RtnlUnlock(RtnlUnlock),
    DevWait(DevWait),
    ObjHold(ObjHold),
    ObjRelease(ObjRelease),
    SockState(SockState),
    /// Boxed: 592 bytes of per-CPU addresses.
    WatchTarget(Box<WatchTarget>),
    WatchHit(WatchHit),
    WatchDone(WatchDone),
    /// Boxed: 24 stack frames.
    BlockedTask(Box<BlockedTask>),
    TrackerStart(TrackerStart),
    TrackerCall(TrackerCall),
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::NetnsCreate(e) => &e.hdr,
            Event::NetnsDestroy(e) => &e.hdr,
            Event::CleanupNet(e) => &e.hdr,
            Event::RtnlUnlock(e) => &e.hdr,
            Event::DevWait(e) => &e.hdr,
            Event::ObjHold(e) => &e.hdr,
            Event::ObjRelease(e) => &e.hdr,
            Event::SockState(e) => &e.hdr,
            Event::WatchTarget(e) => &e.hdr,
            Event::WatchHit(e) => &e.hdr,
            Event::WatchDone(e) => &e.hdr,
            Event::BlockedTask(e) => &e.hdr,
            Event::TrackerStart(e) => &e.hdr,
            Event::TrackerCall(e) => &e.hdr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header or than the struct its kind names.
    Short {
        len: usize,
        need: usize,
    },
    UnknownKind(u32),
    /// A field holds a value the programs never write.
    BadField {
        field: &'static str,
        value: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { len, need } => {
                write!(f, "short record: {len} bytes, need {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind {k}"),
            DecodeError::BadField { field, value } => write!(f, "bad {field} value {value}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Copy a `T` out of the start of `buf`, after checking its length.
fn read<T: Copy>(buf: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Short {
            len: buf.len(),
            need,
        });
    }
    // SAFETY: length checked above; every T used here is a `#[repr(C)]`
    // struct of integers and byte arrays, valid for any bit pattern, and
    // `read_unaligned` makes no alignment assumption about the buffer.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decode one ring-buffer record. Trailing bytes (ring buffer rounding, a
/// newer program appending fields) are ignored.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let hdr: Header = read(buf)?;
    let need = event_size(hdr.kind).ok_or(DecodeError::UnknownKind(hdr.kind))?;
    if buf.len() < need {
        return Err(DecodeError::Short {
            len: buf.len(),
            need,
        });
    }
    Ok(match hdr.kind {
        kind::NETNS_CREATE => {
            let e: NetnsCreate = read(buf)?;
            if e.source > create_source::FORK {
                return Err(DecodeError::BadField {
                    field: "source",
                    value: e.source.into(),
                });
            }
            Event::NetnsCreate(e)
        }
        kind::NETNS_DESTROY => Event::NetnsDestroy(read(buf)?),
        kind::CLEANUP_NET => {
            let e: CleanupNet = read(buf)?;
            if e.phase != phase::START && e.phase != phase::END {
                return Err(DecodeError::BadField {
                    field: "phase",
                    value: e.phase.into(),
                });
            }
            Event::CleanupNet(e)
        }
        kind::RTNL_UNLOCK => Event::RtnlUnlock(read(buf)?),
        kind::DEV_WAIT => Event::DevWait(read(buf)?),
        kind::OBJ_HOLD => {
            let e: ObjHold = read(buf)?;
            check_obj_kind(e.obj_kind)?;
            Event::ObjHold(e)
        }
        kind::OBJ_RELEASE => {
            let e: ObjRelease = read(buf)?;
            check_obj_kind(e.obj_kind)?;
            if e.reason != release_reason::DESTROYED && e.reason != release_reason::MOVED_OFF_DEVICE
            {
                return Err(DecodeError::BadField {
                    field: "reason",
                    value: e.reason.into(),
                });
            }
            Event::ObjRelease(e)
        }
        kind::SOCK_STATE => Event::SockState(read(buf)?),
        kind::WATCH_TARGET => {
            let e: WatchTarget = read(buf)?;
            if e.ncpu as usize > netns_trace_common::WATCH_MAX_CPUS {
                return Err(DecodeError::BadField {
                    field: "ncpu",
                    value: e.ncpu.into(),
                });
            }
            Event::WatchTarget(Box::new(e))
        }
        kind::WATCH_HIT => Event::WatchHit(read(buf)?),
        kind::WATCH_DONE => Event::WatchDone(read(buf)?),
        kind::TRACKER_START => Event::TrackerStart(read(buf)?),
        kind::TRACKER_CALL => {
            let e: TrackerCall = read(buf)?;
            if !(tracker_op::ALLOC..=tracker_op::EXIT).contains(&e.op) {
                return Err(DecodeError::BadField {
                    field: "op",
                    value: e.op.into(),
                });
            }
            Event::TrackerCall(e)
        }
        kind::BLOCKED_TASK => {
            let e: BlockedTask = read(buf)?;
            if e.nr as usize > netns_trace_common::BLOCKED_FRAMES {
                return Err(DecodeError::BadField {
                    field: "nr",
                    value: e.nr.into(),
                });
            }
            Event::BlockedTask(Box::new(e))
        }
        // event_size() knew the kind, so this arm is a new kind added to
        // the common crate but not here yet.
        k => return Err(DecodeError::UnknownKind(k)),
    })
}

fn check_obj_kind(k: u32) -> Result<(), DecodeError> {
    if k == obj_kind::DST || k == obj_kind::NEIGH {
        Ok(())
    } else {
        Err(DecodeError::BadField {
            field: "obj_kind",
            value: k.into(),
        })
    }
}

/// A kernel C string (comm, device name): up to the first NUL, invalid
/// UTF-8 replaced. Not escaped: escaping is the renderer's job.
pub fn cstr_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Name of an errno, given negative (kernel style) or positive.
pub fn errno_name(err: i32) -> Option<&'static str> {
    Some(match err.unsigned_abs() {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        28 => "ENOSPC",
        38 => "ENOSYS",
        87 => "EUSERS",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        _ => return None,
    })
}

/// `ENOMEM` for -12, `errno -300` for an unknown one.
pub fn errno_string(err: i32) -> String {
    errno_name(err).map_or_else(|| format!("errno {err}"), str::to_string)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netns_trace_common::NAME_LEN;

    /// The wire bytes of a plain struct, as the eBPF side would write them.
    pub fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a padding-free `#[repr(C)]` struct (see the common
        // crate), so all of its bytes are initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub fn comm(s: &str) -> [u8; NAME_LEN] {
        let mut c = [0u8; NAME_LEN];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn hdr(kind: u32) -> Header {
        Header {
            kind,
            cpu: 1,
            ts_ns: 5,
            pid: 7,
            tgid: 7,
            comm: comm("ip"),
        }
    }

    #[test]
    fn decodes_every_kind() {
        let c = NetnsCreate {
            hdr: hdr(kind::NETNS_CREATE),
            inum: 42,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&c)), Ok(Event::NetnsCreate(c)));
        let d = NetnsDestroy {
            hdr: hdr(kind::NETNS_DESTROY),
            inum: 42,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&d)), Ok(Event::NetnsDestroy(d)));
        let n = CleanupNet {
            hdr: hdr(kind::CLEANUP_NET),
            phase: phase::END,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&n)), Ok(Event::CleanupNet(n)));
        let r = RtnlUnlock {
            hdr: hdr(kind::RTNL_UNLOCK),
            caller: 9,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&r)), Ok(Event::RtnlUnlock(r)));
        let w = DevWait {
            hdr: hdr(kind::DEV_WAIT),
            refcnt: 2,
            ..Default::default()
        };
        let ev = decode(&bytes_of(&w)).unwrap();
        assert_eq!(ev, Event::DevWait(w));
        assert_eq!(ev.header().pid, 7);
        let h = ObjHold {
            hdr: hdr(kind::OBJ_HOLD),
            obj: 0xffff888001234500,
            dev: 0xffff888003f00000,
            obj_kind: obj_kind::NEIGH,
            family: 2,
            stack_id: -1,
            key: [127, 0, 0, 66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dev_name: comm("lo"),
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&h)), Ok(Event::ObjHold(h)));
        let r = ObjRelease {
            hdr: hdr(kind::OBJ_RELEASE),
            obj: 0xffff888001234500,
            obj_kind: obj_kind::DST,
            reason: release_reason::MOVED_OFF_DEVICE,
        };
        assert_eq!(decode(&bytes_of(&r)), Ok(Event::ObjRelease(r)));
        let k = SockState {
            hdr: hdr(kind::SOCK_STATE),
            sk: 0xffff888005550000,
            family: 2,
            protocol: 6,
            sport: 44321,
            dport: 80,
            oldstate: 2,
            newstate: 1,
            ..Default::default()
        };
        let ev = decode(&bytes_of(&k)).unwrap();
        assert_eq!(ev, Event::SockState(k));
        assert_eq!(ev.header().ts_ns, 5);
        let s = TrackerStart {
            hdr: hdr(kind::TRACKER_START),
            dev: 0xffff888003f00000,
            inum: 42,
            refcnt: 3,
            name: comm("lo"),
            no_tracker: 1,
            _pad: 0,
        };
        assert_eq!(decode(&bytes_of(&s)), Ok(Event::TrackerStart(s)));
        let t = TrackerCall {
            hdr: hdr(kind::TRACKER_CALL),
            dev: 0xffff888003f00000,
            slot: 0xffff888001234560,
            op: tracker_op::FREE,
            no_tracker: 1,
            stack_id: 4,
            _pad: 0,
        };
        assert_eq!(decode(&bytes_of(&t)), Ok(Event::TrackerCall(t)));
    }

    #[test]
    fn tracker_call_with_an_unknown_op_is_an_error() {
        let t = TrackerCall {
            hdr: hdr(kind::TRACKER_CALL),
            op: 9,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&t)),
            Err(DecodeError::BadField {
                field: "op",
                value: 9
            })
        );
    }

    #[test]
    fn bad_object_fields() {
        let h = ObjHold {
            hdr: hdr(kind::OBJ_HOLD),
            obj_kind: 3,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&h)),
            Err(DecodeError::BadField {
                field: "obj_kind",
                value: 3
            })
        );
        let mut r = ObjRelease {
            hdr: hdr(kind::OBJ_RELEASE),
            obj: 1,
            obj_kind: 0,
            reason: release_reason::DESTROYED,
        };
        assert_eq!(
            decode(&bytes_of(&r)).unwrap_err().to_string(),
            "bad obj_kind value 0"
        );
        r.obj_kind = obj_kind::NEIGH;
        r.reason = 3;
        assert_eq!(
            decode(&bytes_of(&r)).unwrap_err().to_string(),
            "bad reason value 3"
        );
        let b = bytes_of(&SockState {
            hdr: hdr(kind::SOCK_STATE),
            ..Default::default()
        });
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn unaligned_and_trailing_bytes() {
        let t = RtnlUnlock {
            hdr: hdr(kind::RTNL_UNLOCK),
            duration_ns: 77,
            caller: 5,
        };
        let mut buf = vec![0u8];
        buf.extend(bytes_of(&t));
        buf.extend([0xaa; 8]);
        assert_eq!(decode(&buf[1..]), Ok(Event::RtnlUnlock(t)));
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(
            decode(&[]),
            Err(DecodeError::Short {
                len: 0,
                need: size_of::<Header>()
            })
        );
        assert_eq!(
            decode(&[1, 2, 3]).unwrap_err().to_string(),
            "short record: 3 bytes, need 40"
        );
        let u = bytes_of(&hdr(99));
        assert_eq!(decode(&u), Err(DecodeError::UnknownKind(99)));
        let d = bytes_of(&NetnsDestroy {
            hdr: hdr(kind::NETNS_DESTROY),
            ..Default::default()
        });
        let need = d.len();
        assert_eq!(
            decode(&d[..need - 1]),
            Err(DecodeError::Short {
                len: need - 1,
                need
            })
        );
        let n = CleanupNet {
            hdr: hdr(kind::CLEANUP_NET),
            phase: 7,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&n)).unwrap_err().to_string(),
            "bad phase value 7"
        );
        let c = NetnsCreate {
            hdr: hdr(kind::NETNS_CREATE),
            source: 9,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bytes_of(&c)),
            Err(DecodeError::BadField { .. })
        ));
    }

    #[test]
    fn strings() {
        assert_eq!(cstr_lossy(b"lo\0\0garbage"), "lo");
        assert_eq!(cstr_lossy(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(cstr_lossy(b"a\xffb\0"), "a\u{fffd}b");
        assert_eq!(cstr_lossy(b""), "");
    }

    #[test]
    fn errnos() {
        assert_eq!(errno_name(-12), Some("ENOMEM"));
        assert_eq!(errno_name(28), Some("ENOSPC"));
        assert_eq!(errno_name(-87), Some("EUSERS"));
        assert_eq!(errno_name(-1), Some("EPERM"));
        assert_eq!(errno_name(-22), Some("EINVAL"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_string(-300), "errno -300");
        assert_eq!(errno_string(i32::MIN), "errno -2147483648");
    }
}
