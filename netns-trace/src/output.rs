//! Output records and their two renderings: JSON Lines (one object per
//! line, `type` first) and bcc-style human lines with fixed columns.
//!
//! Records hold raw values (nanoseconds relative to the tracer start,
//! kernel strings unescaped); units and escaping happen only here, so the
//! two formats cannot drift apart.

use serde::{Serialize, Serializer};

use crate::events::errno_string;
use crate::plan::{render_rows, HookRow};

/// Lost-event counters, cumulative since the tracer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    pub ringbuf_drops: u64,
    pub read_errors: u64,
    pub map_full: u64,
    pub missed_entry: u64,
    pub decode_errors: u64,
}

impl LostCounts {
    fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("ringbuf_drops", self.ringbuf_drops),
            ("read_errors", self.read_errors),
            ("map_full", self.map_full),
            ("missed_entry", self.missed_entry),
            ("decode_errors", self.decode_errors),
        ]
    }

    /// Any counter is higher than in `prev`.
    pub fn increased_since(&self, prev: &LostCounts) -> bool {
        self.fields()
            .iter()
            .zip(prev.fields())
            .any(|(a, b)| a.1 > b.1)
    }

    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|f| f.1 == 0)
    }

    fn human(&self) -> String {
        let v: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.join(" ")
    }
}

/// The container a namespace belongs to, on records about a namespace.
///
/// `Off`: container mapping is not enabled (no `--pid`/`--pid-of-dockerd`);
/// the field is left out. `None`: mapped, not a container's namespace
/// (JSON `null`). `Known`: the container (name and image from the Docker
/// API, when it answered). `Unknown`: it cannot be said, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Container {
    #[default]
    Off,
    None,
    Known {
        id: String,
        name: Option<String>,
        image: Option<String>,
    },
    Unknown(&'static str),
}

impl Container {
    pub fn is_off(&self) -> bool {
        matches!(self, Container::Off)
    }

    /// ` container=NAME (ID12)` for a human event line; empty when there
    /// is nothing to say. Names and images are untrusted: escaped.
    pub fn human_suffix(&self) -> String {
        match self {
            Container::Off | Container::None => String::new(),
            Container::Known { id, name, .. } => {
                let short: String = id.chars().take(12).collect();
                match name {
                    Some(n) => format!(" container={} ({})", escape(n), escape(&short)),
                    None => format!(" container={}", escape(&short)),
                }
            }
            Container::Unknown(why) => format!(" container unknown ({why})"),
        }
    }
}

impl Serialize for Container {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (id, name, image, unknown) = match self {
            Container::Off | Container::None => return s.serialize_none(),
            Container::Known { id, name, image } => {
                (Some(id.as_str()), name.as_deref(), image.as_deref(), None)
            }
            Container::Unknown(why) => (None, None, None, Some(*why)),
        };
        let mut st = s.serialize_struct("Container", 4)?;
        st.serialize_field("id", &id)?;
        st.serialize_field("name", &name)?;
        st.serialize_field("image", &image)?;
        st.serialize_field("unknown", &unknown)?;
        st.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    NetnsCreate(NetnsCreateRec),
    NetnsDestroy(NetnsDestroyRec),
    CleanupNet(CleanupNetRec),
    RtnlUnlock(RtnlUnlockRec),
    DevWait(DevWaitRec),
    /// A device that was waiting became free: `waiting_s` is the whole wait.
    DevReleased(DevWaitRec),
    Socket(SocketRec),
    Watch(WatchRec),
    /// The holder scan of kernel tables, run when a device is first found
    /// stuck.
    Scan(ScanRec),
    /// A task blocked in namespace creation or teardown, or behind it.
    Blocked(BlockedRec),
    /// Once, shortly after attaching: what is stuck, since when, who is
    /// blocked behind it, who holds it.
    Incident(IncidentRec),
    Lost(LostRec),
    Attach(AttachRec),
    Summary(SummaryRec),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsCreateRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    /// Wall clock, Unix nanoseconds.
    #[serde(rename = "wall", serialize_with = "rfc3339_ser")]
    pub wall_ns: u64,
    pub netns: u32,
    #[serde(serialize_with = "hex")]
    pub net: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    #[serde(serialize_with = "hex")]
    pub flags: u64,
    pub clone_newnet: bool,
    /// None when the source cannot time it (syscall level).
    #[serde(rename = "duration_us", serialize_with = "opt_us")]
    pub duration_ns: Option<u64>,
    /// Negative errno, 0 on success.
    #[serde(rename = "error", serialize_with = "errno_ser")]
    pub err: i32,
    /// "copy_net_ns", "unshare" or "fork".
    pub source: &'static str,
    /// The namespace's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Container::is_off")]
    pub container: Container,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsDestroyRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    pub netns: u32,
    pub pid: u32,
    pub comm: String,
    /// The namespace's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Container::is_off")]
    pub container: Container,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CleanupNetRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    /// "start" or "end".
    pub phase: &'static str,
    /// End only: `Some(None)` is an end whose start was not seen (null).
    #[serde(
        rename = "duration_us",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_opt_us"
    )]
    pub duration_ns: Option<Option<u64>>,
    /// Namespaces in the batch (in scope, known to the tracer).
    pub netns: Vec<u32>,
    /// End only, parallel to `netns`: destroy request to end of cleanup.
    #[serde(
        rename = "teardown_us",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_vec_us"
    )]
    pub teardown_ns: Option<Vec<Option<u64>>>,
    pub pid: u32,
    pub comm: String,
    /// Parallel to `netns`: each one's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Container>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RtnlUnlockRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    #[serde(rename = "duration_us", serialize_with = "us")]
    pub duration_ns: u64,
    /// `func+0x1a`, or a hex address when it cannot be symbolised; None
    /// when the probe could not see the caller (an fexit whose trampoline
    /// frame did not check out).
    pub caller: Option<String>,
    #[serde(serialize_with = "hex")]
    pub caller_addr: u64,
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevWaitRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    pub netns: u32,
    pub device: String,
    pub ifindex: i32,
    pub refcnt: i32,
    /// Same number as `refcnt`, under the name the kernel message uses.
    pub usage_count: i32,
    /// When the kernel read `usage_count`, if earlier than `time`: a
    /// report repeated between two polls of the wait loop (after a holder
    /// scan, or in the incident view) carries the last reading.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_secs3")]
    pub usage_count_at: Option<u64>,
    #[serde(rename = "waiting_s", serialize_with = "secs2")]
    pub waiting_ns: u64,
    /// "run_todo" (exact) or "first_seen" (a lower bound).
    pub wait_since: &'static str,
    #[serde(serialize_with = "hex")]
    pub dev: u64,
    pub pid: u32,
    pub comm: String,
    /// Who holds the device (see `ledger`).
    pub holders: Vec<HolderRec>,
    pub attributed: u32,
    /// Usage count − the device's own reference − attributed.
    pub unattributed: i32,
    /// Live tracked objects beyond what the count allows (left out).
    pub over: u32,
    /// False when lost events or full maps make the ledger unsure.
    pub complete: bool,
    /// `--exact`: what the hardware watchpoints counted (absent when the
    /// device is not watched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactRec>,
    /// The namespace's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Container::is_off")]
    pub container: Container,
    /// Human output: print the holder block (first report, or changed).
    #[serde(skip)]
    pub block: bool,
    /// The device's own reference in the count (1 since 5.13, else 0).
    #[serde(skip)]
    pub baseline: i32,
}

/// The watchpoint ledger of one device (see `exact.rs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactRec {
    /// What counted: `watchpoints` or `ref_tracker` (debug kernels).
    pub source: &'static str,
    /// References besides the device's own, counted exactly (null until
    /// the counters were read after arming).
    pub outstanding: Option<i64>,
    /// References already held when the watchpoints were armed.
    pub pre_arm: Option<i64>,
    /// Of those, how many are still outstanding (no stack is known).
    pub pre_arm_left: i64,
    /// The other outstanding holds, grouped by the stack that took them.
    pub hold_sites: Vec<SiteRec>,
    /// Writes seen before the counters were read, or (perf ring) whose
    /// instruction could not be decoded: sign unknown, not counted.
    pub unknown_writes: u32,
    /// Writes the perf ring lost before they were read (not counted).
    pub lost_writes: u64,
    /// Releases with no hold to pair with (a hold was missed).
    pub unpaired_releases: u32,
    /// Who let go last: the most recent release (`holds` is 1).
    pub last_release: Option<SiteRec>,
    /// The kernel's own count (references besides the device's) when it
    /// contradicts `outstanding` for good: writes were not seen, and
    /// `outstanding` and the holds are not exact. Omitted while they agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_disagrees: Option<i64>,
}

/// Outstanding holds taken at one kernel stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteRec {
    pub holds: u32,
    /// When the most recent of them was taken, and by whom.
    #[serde(rename = "last", serialize_with = "secs3")]
    pub last_ns: u64,
    pub comm: String,
    pub pid: u32,
    pub stack: Vec<String>,
}

/// `--exact`: watchpoints armed (or not) on a device's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    pub netns: u32,
    pub device: String,
    #[serde(serialize_with = "hex")]
    pub dev: u64,
    /// What counts the device: `watchpoints` or `ref_tracker`.
    pub source: &'static str,
    #[serde(flatten)]
    pub state: WatchState,
}

/// A task in uninterruptible sleep whose stack is in namespace creation
/// or teardown, or waits for their locks (the task iterator).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Why it matters (see `blocked::classify`).
    pub reason: &'static str,
    /// Seconds since it last ran on a CPU (the scheduler's clock): how
    /// long it has been blocked, at least for this sleep.
    pub blocked_s: Option<f64>,
    /// Its kernel stack, innermost first.
    pub stack: Vec<String>,
}

/// The incident view: the state found on attaching, in one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    /// Devices in the unregister wait loop, as `dev_wait` reports them.
    pub stuck: Vec<DevWaitRec>,
    /// Tasks blocked in namespace creation or teardown, or behind them.
    pub blocked: Vec<BlockedRec>,
}

/// What a holder scan walked (its finds are holders `found_by: "scan"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    /// The stuck devices it looked for.
    pub devices: Vec<String>,
    pub tables: Vec<TableScan>,
    /// Kinds of holders it does not walk.
    pub not_scanned: Vec<&'static str>,
    /// Why there was no scan at all (the kernel's layout, hidden symbols).
    pub unavailable: Option<String>,
}

/// One neighbour table walked by the scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableScan {
    pub table: &'static str,
    /// What was walked: hash buckets (neighbour tables) or sockets (`tcp`).
    pub walked: u32,
    /// Entries were left out (a long chain, or a huge table).
    pub truncated: bool,
    pub error: Option<String>,
}

/// `watch.state`: the life of a device's watchpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WatchState {
    /// Watching every CPU's counter; `pre_arm` references (besides the
    /// device's own) were already held and have no stack. `via`: "bpf"
    /// (a BPF program on each hit) or "perf_ring" (samples read in
    /// userspace; `reason` says why).
    Armed {
        cpus: u32,
        pre_arm: i64,
        via: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Not watched: budget spent, kernel refused, ...
    Unavailable { reason: String },
    /// Closed to watch a stuck device instead.
    Evicted { reason: String },
    /// The device was freed; its watchpoints are closed.
    Disarmed,
}

/// One holder in a `dev_wait` / `dev_released` / summary report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HolderRec {
    pub kind: &'static str,
    #[serde(serialize_with = "hex")]
    pub obj: u64,
    pub address: Option<String>,
    pub family: Option<&'static str>,
    /// Seconds since the tracer started (null: before it, or unknown).
    #[serde(rename = "created", serialize_with = "opt_secs3")]
    pub created_ns: Option<u64>,
    pub pid: u32,
    pub comm: String,
    pub stack: Vec<String>,
    pub found_by: &'static str,
    pub socket: Option<SocketBrief>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketBrief {
    #[serde(serialize_with = "hex")]
    pub sk: u64,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub state: String,
    pub kernel: bool,
}

/// A TCP state change of a socket in a non-initial namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    pub netns: u32,
    #[serde(serialize_with = "hex")]
    pub sk: u64,
    pub family: &'static str,
    pub protocol: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub oldstate: String,
    pub newstate: String,
    pub kernel: bool,
    /// Device of the socket's cached dst (null: none cached).
    pub dst_dev: Option<String>,
    pub pid: u32,
    pub comm: String,
    /// The namespace's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Container::is_off")]
    pub container: Container,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LostRec {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    #[serde(flatten)]
    pub counts: LostCounts,
}

/// The `exact` counting sources chosen at attach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactSources {
    /// For each new loopback device in scope.
    pub created: &'static str,
    /// For devices found stuck that the tracker does not already count.
    pub stuck: &'static str,
    /// Why ref_tracker is not used (null when it is).
    pub ref_tracker_unused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttachRec {
    pub hooks: Vec<HookRow>,
    /// What `exact` counts with: new loopback devices and devices found
    /// stuck (`ref_tracker`, `watchpoints` or `off`, with the reason).
    pub exact_sources: ExactSources,
    pub degraded: bool,
    pub reasons: Vec<String>,
    pub attach_ms: u64,
    /// Where `attach_ms` went.
    pub phases_ms: AttachPhases,
    /// How start-up found kernel symbols: `kallsyms_lookup_name` (asked
    /// by name through a BPF program) or `/proc/kallsyms`.
    pub symbols_from: &'static str,
}

/// The start-up phases, milliseconds each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttachPhases {
    /// Reading the kernel: /proc/kallsyms, BTF (offsets and aya's parse),
    /// the attach plan.
    pub prepare: u64,
    /// Loading programs and maps (the verifier runs here), filling the
    /// scope.
    pub load: u64,
    /// Attaching the hooks (fentry trampolines, kprobes, tracepoints),
    /// then reading the whole symbol table for naming stack frames.
    pub attach: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StillWaiting {
    pub netns: u32,
    pub device: String,
    pub refcnt: i32,
    #[serde(rename = "waiting_s", serialize_with = "secs2")]
    pub waiting_ns: u64,
    pub holders: Vec<HolderRec>,
    pub unattributed: i32,
    pub over: u32,
    /// The namespace's container (left out when mapping is off).
    #[serde(skip_serializing_if = "Container::is_off")]
    pub container: Container,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRec {
    #[serde(rename = "duration_s", serialize_with = "secs3")]
    pub duration_ns: u64,
    pub netns_created: u64,
    pub netns_destroyed: u64,
    pub cleanup_batches: u64,
    #[serde(rename = "slowest_teardown_us", serialize_with = "opt_us")]
    pub slowest_teardown_ns: Option<u64>,
    pub slowest_teardown_netns: Option<u32>,
    /// Destroyed but not yet cleaned up (queued or in a running batch).
    pub netns_pending: Vec<u32>,
    pub devices_still_waiting: Vec<StillWaiting>,
    /// Ring-buffer records read (decoded or not): the tracer's event load.
    pub events_read: u64,
    /// Times the reader woke up and drained the ring: events are batched
    /// (a wakeup per poll interval or per urgent event, not per event).
    pub ring_wakeups: u64,
    pub lost: LostCounts,
    /// `--bpf-stats`: the kernel's run count and run time of each of the
    /// tracer's BPF programs over the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_programs: Option<Vec<BpfProgStat>>,
}

/// One BPF program's cost as the kernel counted it (BPF_ENABLE_STATS).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BpfProgStat {
    pub program: String,
    pub runs: u64,
    pub run_time_us: u64,
    /// Mean nanoseconds per run (0 when it never ran).
    pub avg_ns: u64,
}

// ---- JSON field serializers -------------------------------------------

fn secs3<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((*ns as f64 / 1e6).round() / 1e3)
}

fn opt_secs3<S: Serializer>(ns: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => secs3(ns, s),
        None => s.serialize_none(),
    }
}

fn secs2<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((*ns as f64 / 1e7).round() / 1e2)
}

fn us<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ns / 1000)
}

fn opt_us<S: Serializer>(ns: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => s.serialize_u64(ns / 1000),
        None => s.serialize_none(),
    }
}

fn opt_opt_us<S: Serializer>(ns: &Option<Option<u64>>, s: S) -> Result<S::Ok, S::Error> {
    opt_us(&ns.flatten(), s)
}

fn opt_vec_us<S: Serializer>(v: &Option<Vec<Option<u64>>>, s: S) -> Result<S::Ok, S::Error> {
    let us: Option<Vec<Option<u64>>> = v
        .as_ref()
        .map(|v| v.iter().map(|x| x.map(|ns| ns / 1000)).collect());
    us.serialize(s)
}

pub(crate) fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

fn errno_ser<S: Serializer>(err: &i32, s: S) -> Result<S::Ok, S::Error> {
    match err {
        0 => s.serialize_none(),
        e => s.serialize_str(&errno_string(*e)),
    }
}

fn rfc3339_ser<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*ns))
}

/// Unix nanoseconds as `2024-05-01T12:34:56.789Z` (UTC, milliseconds).
pub fn rfc3339(unix_ns: u64) -> String {
    Rfc3339(unix_ns).to_string()
}

/// `rfc3339` written where it goes (a JSON record: no String first).
pub(crate) struct Rfc3339(pub(crate) u64);

impl Rfc3339 {
    /// Year, month, day, hour, minute, second, millisecond (UTC).
    pub(crate) fn fields(&self) -> [u64; 7] {
        let unix_ns = self.0;
        let secs = unix_ns / 1_000_000_000;
        let ms = unix_ns % 1_000_000_000 / 1_000_000;
        let (days, sod) = (secs / 86_400, secs % 86_400);
        // Civil-from-days (H. Hinnant), valid for any date after 1970.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        [
            y as u64,
            m as u64,
            d as u64,
            sod / 3600,
            sod % 3600 / 60,
            sod % 60,
            ms,
        ]
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [y, m, d, hh, mm, ss, ms] = self.fields();
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
    }
}

// ---- human rendering --------------------------------------------------

/// Make kernel- or user-supplied text safe for a terminal: control
/// characters become `\xNN`, a backslash becomes `\\`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `850us`, `1.2ms`, `3.4s`.
pub fn fmt_duration(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{}us", ns / 1000)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}s", ns as f64 / 1e9)
    }
}

/// Namespace-related clone flags by name, the rest as hex.
pub fn fmt_clone_flags(flags: u64) -> String {
    const NAMES: &[(u64, &str)] = &[
        (0x0000_0080, "CLONE_NEWTIME"),
        (0x0002_0000, "CLONE_NEWNS"),
        (0x0200_0000, "CLONE_NEWCGROUP"),
        (0x0400_0000, "CLONE_NEWUTS"),
        (0x0800_0000, "CLONE_NEWIPC"),
        (0x1000_0000, "CLONE_NEWUSER"),
        (0x2000_0000, "CLONE_NEWPID"),
        (0x4000_0000, "CLONE_NEWNET"),
    ];
    let mut parts: Vec<String> = NAMES
        .iter()
        .rev()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = NAMES.iter().fold(flags, |f, (bit, _)| f & !bit);
    if rest != 0 || parts.is_empty() {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

const COLUMNS: &str = " TIME(s) EVENT              NETNS     PID COMM             DETAIL";

fn line(time_ns: u64, event: &str, netns: &str, pid: &str, comm: &str, detail: &str) -> String {
    let t = time_ns as f64 / 1e9;
    format!(
        "{t:>8.3} {event:<13} {netns:>10} {pid:>7} {:<16} {detail}",
        escape(comm)
    )
    .trim_end()
    .to_string()
}

fn ns_list(netns: &[u32], extra: impl Fn(usize) -> String) -> String {
    const MAX: usize = 8;
    let mut v: Vec<String> = netns
        .iter()
        .take(MAX)
        .enumerate()
        .map(|(i, n)| format!("{n}{}", extra(i)))
        .collect();
    if netns.len() > MAX {
        v.push(format!("+{} more", netns.len() - MAX));
    }
    v.join(",")
}

/// `1.2.3.4:80`, `[::1]:80`.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{}]:{port}", escape(addr))
    } else {
        format!("{}:{port}", escape(addr))
    }
}

/// At most this many stack frames per holder in human output.
const STACK_FRAMES: usize = 6;

/// The innermost frames of a stack shown in human output, escaped.
fn shown_frames(stack: &[String]) -> Vec<String> {
    stack.iter().take(STACK_FRAMES).map(|f| escape(f)).collect()
}

/// One or two lines per holder (the object, then its stack), indented.
fn holder_lines(holders: &[HolderRec], device: &str, ind: &str) -> Vec<String> {
    let mut out = Vec::new();
    for h in holders {
        let what = match (&h.address, &h.socket) {
            (Some(a), _) => format!("{} {}", h.kind, escape(a)),
            (None, Some(s)) => format!(
                "{} of socket {} -> {} {}{}",
                h.kind,
                host_port(&s.saddr, s.sport),
                host_port(&s.daddr, s.dport),
                escape(&s.state),
                if s.kernel { " (kernel)" } else { "" }
            ),
            (None, None) => format!("{} {:#x}", h.kind, h.obj),
        };
        let when = h.created_ns.map_or("before attach".into(), |t| {
            format!("at t+{:.2} s", t as f64 / 1e9)
        });
        out.push(format!(
            "{ind}{what} on {}, created by pid {} ({}) {when}",
            escape(device),
            h.pid,
            escape(&h.comm)
        ));
        if !h.stack.is_empty() {
            let mut frames = shown_frames(&h.stack);
            if h.stack.len() > STACK_FRAMES {
                frames.push("...".into());
            }
            out.push(format!("{ind}  stack: {}", frames.join(" <- ")));
        }
    }
    out
}

/// The closing lines of a report: unattributed, over, completeness.
fn report_tail(
    unattributed: i32,
    over: u32,
    complete: bool,
    exact_named: bool,
    ind: &str,
) -> Vec<String> {
    let mut out = vec![format!(
        "{ind}unattributed: {unattributed}{}{}",
        if exact_named && unattributed > 0 {
            " (no object the tracer follows; the watchpoints above name the holds)"
        } else {
            ""
        },
        if complete {
            ""
        } else {
            " (events were lost: ledger incomplete)"
        }
    )];
    if over > 0 {
        out.push(format!(
            "{ind}over: {over} more tracked objects than references (oldest left out; releases were missed)"
        ));
    }
    out
}

/// What the watchpoints (or ref_tracker) counted: outstanding references
/// by call site.
fn exact_lines(x: &ExactRec, ind: &str) -> Vec<String> {
    let source = x.source;
    let Some(outstanding) = x.outstanding else {
        return vec![format!(
            "{ind}exact ({source}): armed, counters not read yet"
        )];
    };
    let mut notes = Vec::new();
    if x.pre_arm_left != 0 {
        notes.push(format!("{} held since before arming", x.pre_arm_left));
    }
    if x.unknown_writes > 0 {
        notes.push(format!("{} writes not counted", x.unknown_writes));
    }
    if x.lost_writes > 0 {
        notes.push(format!("{} writes lost", x.lost_writes));
    }
    if x.unpaired_releases > 0 {
        notes.push(format!("{} releases unpaired", x.unpaired_releases));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    let mut out = vec![format!(
        "{ind}exact ({source}): {outstanding} outstanding reference(s){notes}"
    )];
    if let Some(kernel) = x.kernel_disagrees {
        out.push(format!(
            "{ind}  NOT EXACT: the kernel counts {kernel}; {} write(s) were not seen (another watcher on these counters under an emulator, or hits lost): the holds below may be wrong",
            (outstanding - kernel).abs()
        ));
    }
    for site in &x.hold_sites {
        let frames = shown_frames(&site.stack);
        out.push(format!(
            "{ind}  {} hold(s) taken by pid {} ({}) at t+{:.2} s: {}",
            site.holds,
            site.pid,
            escape(&site.comm),
            site.last_ns as f64 / 1e9,
            frames.join(" <- ")
        ));
    }
    if let (Some(rel), 0) = (&x.last_release, outstanding) {
        let frames = shown_frames(&rel.stack);
        out.push(format!(
            "{ind}  last release by pid {} ({}) at t+{:.2} s: {}",
            rel.pid,
            escape(&rel.comm),
            rel.last_ns as f64 / 1e9,
            frames.join(" <- ")
        ));
    }
    out
}

/// Human output only: the incident view is the first screen after the
/// attach table. Records that arrive before it are held back; those it
/// summarises (stuck devices, blocked tasks, scans, watchpoints) are then
/// dropped from the human stream, the others follow it. JSON shows every
/// record in order and does not use this.
#[derive(Debug, Default)]
pub struct IncidentGate {
    held: Vec<Record>,
    open: bool,
}

impl IncidentGate {
    /// The records to render now, in order, given the next one.
    pub fn admit(&mut self, rec: Record) -> Vec<Record> {
        if self.open {
            return vec![rec];
        }
        match rec {
            Record::Attach(_) => vec![rec],
            Record::Incident(_) => {
                self.open = true;
                let mut out = vec![rec];
                out.extend(std::mem::take(&mut self.held).into_iter().filter(|r| {
                    !matches!(
                        r,
                        Record::DevWait(_)
                            | Record::Blocked(_)
                            | Record::Scan(_)
                            | Record::Watch(_)
                    )
                }));
                out
            }
            // Stopped before the view: everything held, then the summary.
            Record::Summary(_) => {
                self.open = true;
                let mut out = std::mem::take(&mut self.held);
                out.push(rec);
                out
            }
            other => {
                self.held.push(other);
                vec![]
            }
        }
    }
}

/// The incident view: one screen before the live stream.
fn incident_screen(r: &IncidentRec) -> String {
    let mut out = vec![format!(
        "=== incident view, {:.2}s after start: what is stuck, since when, who waits, who holds it ===",
        r.time_ns as f64 / 1e9
    )];
    if r.stuck.is_empty() {
        out.push("STUCK    nothing: no device is in the unregister wait loop".into());
    }
    for d in &r.stuck {
        // The holder block, its first line (device, count, wait) as STUCK.
        let block = holder_block(d);
        for (i, l) in block.lines().enumerate() {
            let l = l.trim_start_matches(' ');
            out.push(if i == 0 {
                format!("STUCK    {l}")
            } else {
                format!("           {l}")
            });
        }
    }
    if r.blocked.is_empty() {
        out.push("BLOCKED  nobody: no task is blocked in namespace creation or teardown".into());
    }
    for b in &r.blocked {
        out.push(format!(
            "BLOCKED  pid {} ({}): {}{}",
            b.pid,
            escape(&b.comm),
            b.reason,
            b.blocked_s
                .map_or(String::new(), |s| format!(", blocked {s:.1}s"))
        ));
    }
    out.push("=== live stream ===".into());
    out.join("\n")
}

/// The holder block under a `dev_wait` line: who holds the device.
fn holder_block(r: &DevWaitRec) -> String {
    const IND: &str = "         ";
    let own = match r.baseline {
        0 => String::new(),
        1 => " (1 is the device's own)".into(),
        b => format!(" ({b} are the device's own)"),
    };
    let waiting = if r.wait_since == "run_todo" {
        "waiting"
    } else {
        "waiting at least"
    };
    let mut out = vec![format!(
        "{IND}{} of netns {}: usage count {}{own}, {waiting} {:.1}s",
        escape(&r.device),
        r.netns,
        r.usage_count,
        r.waiting_ns as f64 / 1e9
    )];
    let inner = format!("{IND}  ");
    out.extend(holder_lines(&r.holders, &r.device, &inner));
    if let Some(x) = &r.exact {
        out.extend(exact_lines(x, &inner));
    }
    let exact_named = r.exact.as_ref().is_some_and(|x| !x.hold_sites.is_empty());
    out.extend(report_tail(
        r.unattributed,
        r.over,
        r.complete,
        exact_named,
        &inner,
    ));
    out.join("\n")
}

/// Human text for one record: an event line, or several lines for the
/// attach table and the summary. No trailing newline.
pub fn human(rec: &Record) -> String {
    match rec {
        Record::NetnsCreate(r) => {
            let mut d = format!("flags={}", fmt_clone_flags(r.flags));
            if let Some(ns) = r.duration_ns {
                d += &format!(" dur={}", fmt_duration(ns));
            }
            if r.err != 0 {
                d += &format!(" error={}", errno_string(r.err));
            }
            if r.source != "copy_net_ns" {
                d += &format!(" via={}", r.source);
            }
            d += &r.container.human_suffix();
            line(
                r.time_ns,
                "netns_create",
                &r.netns.to_string(),
                &r.pid.to_string(),
                &r.comm,
                &d,
            )
        }
        Record::NetnsDestroy(r) => line(
            r.time_ns,
            "netns_destroy",
            &r.netns.to_string(),
            &r.pid.to_string(),
            &r.comm,
            &format!("queued for cleanup{}", r.container.human_suffix()),
        ),
        Record::CleanupNet(r) => {
            let netns = match r.netns.as_slice() {
                [one] => one.to_string(),
                _ => "-".into(),
            };
            let d = match (&r.duration_ns, &r.teardown_ns) {
                (Some(dur), Some(td)) => {
                    let dur = dur.map_or("?".into(), fmt_duration);
                    let list = ns_list(&r.netns, |i| {
                        format!(
                            "={}",
                            td.get(i)
                                .copied()
                                .flatten()
                                .map_or("?".into(), fmt_duration)
                        )
                    });
                    format!("end dur={dur} batch={} teardown {list}", r.netns.len())
                }
                _ if r.netns.is_empty() => "start batch=0".into(),
                _ => format!(
                    "start batch={} netns={}",
                    r.netns.len(),
                    ns_list(&r.netns, |_| String::new())
                ),
            };
            line(
                r.time_ns,
                "cleanup_net",
                &netns,
                &r.pid.to_string(),
                &r.comm,
                &d,
            )
        }
        Record::RtnlUnlock(r) => {
            let d = format!(
                "dur={} caller={}",
                fmt_duration(r.duration_ns),
                r.caller.as_deref().map_or_else(|| "?".into(), escape)
            );
            line(
                r.time_ns,
                "rtnl_unlock",
                "-",
                &r.pid.to_string(),
                &r.comm,
                &d,
            )
        }
        Record::DevWait(r) => {
            // From first sight the true wait is longer: say "at least".
            let op = if r.wait_since == "run_todo" {
                "="
            } else {
                ">="
            };
            // A repeated report: the count is as old as its reading.
            let read = r
                .usage_count_at
                .map(|t| format!(" (read at {:.3})", t as f64 / 1e9))
                .unwrap_or_default();
            let d = format!(
                "{} ifindex={} usage_count={}{read} waiting{op}{:.1}s{}",
                escape(&r.device),
                r.ifindex,
                r.usage_count,
                r.waiting_ns as f64 / 1e9,
                r.container.human_suffix()
            );
            let first = line(
                r.time_ns,
                "dev_wait",
                &r.netns.to_string(),
                &r.pid.to_string(),
                &r.comm,
                &d,
            );
            if r.block {
                format!("{first}\n{}", holder_block(r))
            } else {
                first
            }
        }
        Record::Watch(r) => {
            let dev = escape(&r.device);
            let d = match &r.state {
                WatchState::Armed { pre_arm, .. } if r.source == "ref_tracker" => format!(
                    "{dev} counted through the kernel's ref_tracker ({pre_arm} reference(s) already held)"
                ),
                WatchState::Armed {
                    cpus,
                    pre_arm,
                    reason,
                    ..
                } => {
                    let via = match reason {
                        Some(why) => format!("; read from the perf ring: {}", escape(why)),
                        None => String::new(),
                    };
                    format!(
                        "{dev} watchpoints armed on {cpus} CPUs ({pre_arm} reference(s) already held{via})"
                    )
                }
                WatchState::Unavailable { reason } => {
                    format!("{dev} NOT watched: {}", escape(reason))
                }
                WatchState::Evicted { reason } => {
                    format!("{dev} watchpoints closed: {}", escape(reason))
                }
                WatchState::Disarmed if r.source == "ref_tracker" => {
                    format!("{dev} freed: no longer counted")
                }
                WatchState::Disarmed => format!("{dev} freed: watchpoints closed"),
            };
            line(r.time_ns, "watch", &r.netns.to_string(), "-", "-", &d)
        }
        Record::Incident(r) => incident_screen(r),
        Record::Blocked(r) => {
            let mut d = r.reason.to_string();
            if let Some(s) = r.blocked_s {
                d += &format!(", blocked {s:.1}s");
            }
            let first = line(r.time_ns, "blocked", "-", &r.pid.to_string(), &r.comm, &d);
            let frames = shown_frames(&r.stack);
            format!("{first}\n           stack: {}", frames.join(" <- "))
        }
        Record::Scan(r) => {
            let d = match &r.unavailable {
                Some(why) => format!("holder scan not possible: {}", escape(why)),
                None => {
                    let tables: Vec<String> = r
                        .tables
                        .iter()
                        .map(|t| match &t.error {
                            Some(e) => format!("{} failed ({})", t.table, escape(e)),
                            None => format!(
                                "{} {} {}{}",
                                t.table,
                                t.walked,
                                if t.table == "tcp" {
                                    "sockets"
                                } else {
                                    "buckets"
                                },
                                if t.truncated { " (truncated)" } else { "" }
                            ),
                        })
                        .collect();
                    format!(
                        "holders of {} searched in {}; not searched: {}",
                        escape(&r.devices.join(", ")),
                        tables.join(", "),
                        r.not_scanned.join(", ")
                    )
                }
            };
            line(r.time_ns, "scan", "-", "-", "-", &d)
        }
        Record::Socket(r) => {
            let d = format!(
                "{} {} -> {} {}->{}{} dst={}{}",
                escape(&r.protocol),
                host_port(&r.saddr, r.sport),
                host_port(&r.daddr, r.dport),
                escape(&r.oldstate),
                escape(&r.newstate),
                if r.kernel { " kernel" } else { "" },
                r.dst_dev.as_deref().map_or("-".into(), escape),
                r.container.human_suffix()
            );
            line(
                r.time_ns,
                "socket",
                &r.netns.to_string(),
                &r.pid.to_string(),
                &r.comm,
                &d,
            )
        }
        Record::DevReleased(r) => {
            let op = if r.wait_since == "run_todo" { "" } else { ">=" };
            let d = format!(
                "{} ifindex={} free after {op}{:.2}s (usage_count={}){}",
                escape(&r.device),
                r.ifindex,
                r.waiting_ns as f64 / 1e9,
                r.usage_count,
                r.container.human_suffix()
            );
            let first = line(
                r.time_ns,
                "dev_released",
                &r.netns.to_string(),
                &r.pid.to_string(),
                &r.comm,
                &d,
            );
            // --exact: who let go of the last reference, with its stack.
            match &r.exact {
                Some(x) if x.last_release.is_some() => {
                    let inner = "           ";
                    let mut out = vec![first];
                    out.extend(exact_lines(x, inner));
                    out.join("\n")
                }
                _ => first,
            }
        }
        Record::Lost(r) => line(
            r.time_ns,
            "lost",
            "-",
            "-",
            "-",
            &format!("{} (totals)", r.counts.human()),
        ),
        Record::Attach(r) => {
            let x = &r.exact_sources;
            let say = |s: &'static str| if s == "off" { "not counted" } else { s };
            let mut sources = format!(
                "exact counting: new loopback devices: {}; devices found stuck: {}",
                say(x.created),
                say(x.stuck)
            );
            if let Some(why) = &x.ref_tracker_unused {
                sources += &format!(" (ref_tracker not used: {})", escape(why));
            }
            let mut out = vec![render_rows(&r.hooks), sources];
            if r.degraded {
                out.push(format!("attached in {} ms; DEGRADED:", r.attach_ms));
                out.extend(r.reasons.iter().map(|x| format!("  - {x}")));
            } else {
                out.push(format!("attached in {} ms; full tracer", r.attach_ms));
            }
            out.join("\n")
        }
        Record::Summary(r) => human_summary(r),
    }
}

fn human_summary(r: &SummaryRec) -> String {
    let mut out = vec![
        format!("--- summary: {:.3} s ---", r.duration_ns as f64 / 1e9),
        format!("namespaces created:   {}", r.netns_created),
        format!("namespaces destroyed: {}", r.netns_destroyed),
        format!("cleanup batches:      {}", r.cleanup_batches),
    ];
    out.push(match (r.slowest_teardown_ns, r.slowest_teardown_netns) {
        (Some(ns), Some(n)) => format!("slowest teardown:     {} (netns {n})", fmt_duration(ns)),
        _ => "slowest teardown:     -".into(),
    });
    if !r.netns_pending.is_empty() {
        let v: Vec<String> = r.netns_pending.iter().map(u32::to_string).collect();
        out.push(format!("pending cleanup:      {}", v.join(" ")));
    }
    if r.devices_still_waiting.is_empty() {
        out.push("still waiting:        none".into());
    }
    for (i, d) in r.devices_still_waiting.iter().enumerate() {
        out.push(format!(
            "{}{} in netns {} usage_count={} waiting={:.1}s{}",
            if i == 0 {
                "still waiting:        "
            } else {
                "                      "
            },
            escape(&d.device),
            d.netns,
            d.refcnt,
            d.waiting_ns as f64 / 1e9,
            d.container.human_suffix()
        ));
        const IND: &str = "                        ";
        out.extend(holder_lines(&d.holders, &d.device, IND));
        out.extend(report_tail(d.unattributed, d.over, true, false, IND));
    }
    out.push(if r.lost.is_zero() {
        "lost events:          none".into()
    } else {
        format!("lost events:          {}", r.lost.human())
    });
    for (i, p) in r.bpf_programs.iter().flatten().enumerate() {
        out.push(format!(
            "{}{:<22} runs={} total={}us avg={}ns",
            if i == 0 {
                "bpf programs:         "
            } else {
                "                      "
            },
            p.program,
            p.runs,
            p.run_time_us,
            p.avg_ns
        ));
    }
    out.join("\n")
}

/// One JSON Lines object (no trailing newline).
pub fn json_line(rec: &Record) -> String {
    // Serialising these plain structs cannot fail (no maps with non-string
    // keys, no foreign Serialize impls).
    serde_json::to_string(rec).expect("record serialises")
}

/// How the human stream looks: colour, and the wall clock column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HumanStyle {
    /// ANSI colours on event names (only when writing to a terminal).
    pub color: bool,
    /// Wall clock at the tracer's start (Unix ns) and the local UTC offset
    /// in seconds: each event line starts with its local time of day.
    pub wall: Option<(u64, i64)>,
}

/// `HH:MM:SS.mmm` of a Unix time in a zone `utc_offset_s` east of UTC.
pub fn time_of_day(unix_ns: u64, utc_offset_s: i64) -> String {
    let ms_total = (unix_ns / 1_000_000) as i64 + utc_offset_s * 1000;
    let ms_of_day = ms_total.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

impl Record {
    /// Time relative to the tracer start, for event records.
    pub fn time_ns(&self) -> Option<u64> {
        Some(match self {
            Record::NetnsCreate(r) => r.time_ns,
            Record::NetnsDestroy(r) => r.time_ns,
            Record::CleanupNet(r) => r.time_ns,
            Record::RtnlUnlock(r) => r.time_ns,
            Record::DevWait(r) | Record::DevReleased(r) => r.time_ns,
            Record::Socket(r) => r.time_ns,
            Record::Watch(r) => r.time_ns,
            Record::Scan(r) => r.time_ns,
            Record::Blocked(r) => r.time_ns,
            Record::Incident(r) => r.time_ns,
            Record::Lost(r) => r.time_ns,
            Record::Attach(_) | Record::Summary(_) => return None,
        })
    }

    /// The EVENT column's text and its colour (ANSI SGR), if any.
    fn event_color(&self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Record::NetnsCreate(_) => ("netns_create", "36"),
            Record::NetnsDestroy(_) => ("netns_destroy", "33"),
            Record::CleanupNet(_) => ("cleanup_net", "33"),
            Record::DevWait(_) => ("dev_wait", "1;31"),
            Record::DevReleased(_) => ("dev_released", "32"),
            Record::Lost(_) => ("lost", "1;31"),
            _ => return None,
        })
    }
}

/// Renders records in the chosen format; prints the human column header
/// before the first event line.
#[derive(Debug, Default)]
pub struct Renderer {
    json: bool,
    header_done: bool,
    style: HumanStyle,
    /// A JSON line being built (kept: no allocation per record).
    scratch: Vec<u8>,
}

const WALL_WIDTH: usize = 13; // "HH:MM:SS.mmm "

impl Renderer {
    pub fn new(json: bool) -> Self {
        Self::with_style(json, HumanStyle::default())
    }

    pub fn with_style(json: bool, style: HumanStyle) -> Self {
        Renderer {
            json,
            header_done: false,
            style,
            scratch: Vec::new(),
        }
    }

    /// Writes `rec` to `w`, ending with a newline. JSON: the churn's
    /// records by `json_fast`, the others by serde straight into `w`.
    pub fn render_to(&mut self, w: &mut impl std::io::Write, rec: &Record) -> std::io::Result<()> {
        if !self.json {
            return w.write_all(self.render(rec).as_bytes());
        }
        self.scratch.clear();
        if crate::json_fast::write(rec, &mut self.scratch) {
            self.scratch.push(b'\n');
            return w.write_all(&self.scratch);
        }
        serde_json::to_writer(&mut *w, rec)?;
        w.write_all(b"\n")
    }

    /// Text to write for `rec`, ending with a newline.
    pub fn render(&mut self, rec: &Record) -> String {
        if self.json {
            return json_line(rec) + "\n";
        }
        let mut out = String::new();
        let time = rec.time_ns();
        if time.is_some() && !self.header_done {
            self.header_done = true;
            if self.style.wall.is_some() {
                out += &format!("{:<WALL_WIDTH$}", "WALL");
            }
            out += COLUMNS;
            out.push('\n');
        }
        let text = human(rec);
        let (Some(t), Some((start, offset))) = (time, self.style.wall) else {
            out += &self.colored(rec, &text);
            out.push('\n');
            return out;
        };
        for (i, l) in text.lines().enumerate() {
            if i == 0 {
                out += &time_of_day(start + t, offset);
                out.push(' ');
                out += &self.colored(rec, l);
            } else {
                out += &" ".repeat(WALL_WIDTH);
                out += l;
            }
            out.push('\n');
        }
        out
    }

    /// Colours the event name on the first line (the first occurrence of
    /// it: the time column before it is digits).
    fn colored(&self, rec: &Record, text: &str) -> String {
        let Some((name, sgr)) = rec.event_color().filter(|_| self.style.color) else {
            return text.to_string();
        };
        match text.find(name) {
            Some(i) => format!(
                "{}\x1b[{sgr}m{name}\x1b[0m{}",
                &text[..i],
                &text[i + name.len()..]
            ),
            None => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> Record {
        Record::NetnsCreate(NetnsCreateRec {
            container: Container::Off,
            time_ns: 12_345_400_000,
            wall_ns: 1_714_566_896_789_000_000,
            netns: 4026532281,
            net: 0xffff888004a1c000,
            pid: 812,
            tgid: 800,
            comm: "dockerd".into(),
            flags: 0x4000_0000,
            clone_newnet: true,
            duration_ns: Some(1_234_567),
            err: 0,
            source: "copy_net_ns",
        })
    }

    fn dev_wait() -> Record {
        Record::DevWait(DevWaitRec {
            container: Container::Off,
            time_ns: 15_001_000_000,
            netns: 4026532281,
            device: "lo".into(),
            ifindex: 1,
            refcnt: 2,
            usage_count: 2,
            usage_count_at: None,
            waiting_ns: 3_004_000_000,
            wait_since: "run_todo",
            dev: 0xffff888003f00000,
            pid: 93,
            comm: "kworker/u4:1".into(),
            holders: vec![],
            attributed: 0,
            unattributed: 1,
            over: 0,
            complete: true,
            exact: None,
            block: false,
            baseline: 1,
        })
    }

    #[test]
    fn incident_gate_holds_until_the_view() {
        let mut g = IncidentGate::default();
        assert!(g.admit(dev_wait()).is_empty());
        assert!(g.admit(create()).is_empty());
        let view = Record::Incident(IncidentRec {
            time_ns: 1,
            stuck: vec![],
            blocked: vec![],
        });
        let out = g.admit(view.clone());
        // The view, then what it does not summarise (the creation).
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], view);
        assert!(matches!(out[1], Record::NetnsCreate(_)));
        assert_eq!(g.admit(dev_wait()).len(), 1, "live after the view");
        // Stopped before any view: nothing is lost.
        let mut g = IncidentGate::default();
        g.admit(dev_wait());
        let out = g.admit(Record::Summary(summary()));
        assert_eq!(out.len(), 2);
        assert!(human(&Record::Incident(IncidentRec {
            time_ns: 1_500_000_000,
            stuck: vec![],
            blocked: vec![]
        }))
        .contains("STUCK    nothing"));
    }

    #[test]
    fn exact_blocks_in_human_output() {
        let site = |comm: &str, t: u64, f: &str| SiteRec {
            holds: 1,
            last_ns: t,
            comm: comm.into(),
            pid: 7,
            stack: vec![f.into(), "netns_leak_init+0x49 [netns_leak]".into()],
        };
        let Record::DevWait(mut r) = dev_wait() else {
            unreachable!()
        };
        r.block = true;
        r.exact = Some(ExactRec {
            source: "watchpoints",
            outstanding: Some(1),
            pre_arm: Some(11),
            pre_arm_left: 0,
            hold_sites: vec![site("ins\x1bmod", 5_570_000_000, "dev_get_by_name+0x7f")],
            unknown_writes: 0,
            lost_writes: 0,
            unpaired_releases: 0,
            last_release: None,
            kernel_disagrees: None,
        });
        let h = human(&Record::DevWait(r.clone()));
        assert!(!h.contains("NOT EXACT"), "{h}");
        assert!(!json_line(&Record::DevWait(r.clone())).contains("kernel_disagrees"));
        assert!(
            h.contains("exact (watchpoints): 1 outstanding reference(s)\n"),
            "{h}"
        );
        assert!(
            h.contains("1 hold(s) taken by pid 7 (ins\\x1bmod) at t+5.57 s: dev_get_by_name+0x7f <- netns_leak_init+0x49 [netns_leak]"),
            "{h}"
        );
        assert!(
            h.contains("unattributed: 1 (no object the tracer follows"),
            "{h}"
        );
        // Released: who let go last.
        r.exact = Some(ExactRec {
            source: "ref_tracker",
            outstanding: Some(0),
            hold_sites: vec![],
            last_release: Some(site(
                "kworker/1:1",
                8_990_000_000,
                "leak_release+0x28 [netns_leak]",
            )),
            ..r.exact.clone().unwrap()
        });
        let h = human(&Record::DevReleased(r.clone()));
        assert!(
            h.contains("last release by pid 7 (kworker/1:1) at t+8.99 s: leak_release+0x28"),
            "{h}"
        );
        // The kernel contradicts the count: said loudly, in both formats.
        r.exact = Some(ExactRec {
            outstanding: Some(10),
            pre_arm_left: 9,
            kernel_disagrees: Some(1),
            ..r.exact.clone().unwrap()
        });
        let h = human(&Record::DevWait(r.clone()));
        assert!(
            h.contains("NOT EXACT: the kernel counts 1; 9 write(s) were not seen"),
            "{h}"
        );
        assert!(json_line(&Record::DevWait(r)).contains(r#""kernel_disagrees":1"#));
    }

    #[test]
    fn watch_armed_says_how_hits_are_read() {
        let armed = |via, reason: Option<&str>| {
            Record::Watch(WatchRec {
                time_ns: 2_000_000_000,
                netns: 7,
                device: "lo".into(),
                dev: 0x10,
                source: "watchpoints",
                state: WatchState::Armed {
                    cpus: 2,
                    pre_arm: 11,
                    via,
                    reason: reason.map(Into::into),
                },
            })
        };
        assert_eq!(
            json_line(&armed("bpf", None)),
            r#"{"type":"watch","time":2.0,"netns":7,"device":"lo","dev":"0x10","source":"watchpoints","state":"armed","cpus":2,"pre_arm":11,"via":"bpf"}"#
        );
        let ring = armed("perf_ring", Some("SET_BPF refused"));
        assert!(json_line(&ring).ends_with(r#""via":"perf_ring","reason":"SET_BPF refused"}"#));
        assert!(human(&ring)
            .contains("11 reference(s) already held; read from the perf ring: SET_BPF refused)"));
        assert!(human(&armed("bpf", None)).contains("already held)"));
    }

    #[test]
    fn json_netns_create() {
        assert_eq!(
            json_line(&create()),
            r#"{"type":"netns_create","time":12.345,"wall":"2024-05-01T12:34:56.789Z","netns":4026532281,"net":"0xffff888004a1c000","pid":812,"tgid":800,"comm":"dockerd","flags":"0x40000000","clone_newnet":true,"duration_us":1234,"error":null,"source":"copy_net_ns"}"#
        );
        let Record::NetnsCreate(mut r) = create() else {
            unreachable!()
        };
        r.err = -12;
        r.netns = 0;
        r.net = 0;
        r.duration_ns = None;
        r.source = "unshare";
        let j = json_line(&Record::NetnsCreate(r));
        assert!(j.contains(r#""netns":0,"net":"0x0""#), "{j}");
        assert!(
            j.contains(r#""duration_us":null,"error":"ENOMEM","source":"unshare""#),
            "{j}"
        );
    }

    #[test]
    fn json_dev_wait_and_others() {
        assert_eq!(
            json_line(&dev_wait()),
            r#"{"type":"dev_wait","time":15.001,"netns":4026532281,"device":"lo","ifindex":1,"refcnt":2,"usage_count":2,"waiting_s":3.0,"wait_since":"run_todo","dev":"0xffff888003f00000","pid":93,"comm":"kworker/u4:1","holders":[],"attributed":0,"unattributed":1,"over":0,"complete":true}"#
        );
        let d = Record::NetnsDestroy(NetnsDestroyRec {
            container: Container::Off,
            time_ns: 1,
            netns: 7,
            pid: 1,
            comm: "ip".into(),
        });
        assert_eq!(
            json_line(&d),
            r#"{"type":"netns_destroy","time":0.0,"netns":7,"pid":1,"comm":"ip"}"#
        );
        let r = Record::RtnlUnlock(RtnlUnlockRec {
            time_ns: 2_000_000_000,
            duration_ns: 15_500_000,
            caller: Some("rtnetlink_rcv_msg+0x1a".into()),
            caller_addr: 0xffffffff81001a1a,
            pid: 5,
            comm: "ip".into(),
        });
        assert_eq!(
            json_line(&r),
            r#"{"type":"rtnl_unlock","time":2.0,"duration_us":15500,"caller":"rtnetlink_rcv_msg+0x1a","caller_addr":"0xffffffff81001a1a","pid":5,"comm":"ip"}"#
        );
        let t = Record::RtnlUnlock(RtnlUnlockRec {
            time_ns: 0,
            duration_ns: 999,
            caller: None,
            caller_addr: 0,
            pid: 9,
            comm: "k".into(),
        });
        assert_eq!(
            json_line(&t),
            r#"{"type":"rtnl_unlock","time":0.0,"duration_us":0,"caller":null,"caller_addr":"0x0","pid":9,"comm":"k"}"#
        );
        let l = Record::Lost(LostRec {
            time_ns: 3_000_000_000,
            counts: LostCounts {
                ringbuf_drops: 3,
                decode_errors: 1,
                ..Default::default()
            },
        });
        assert_eq!(
            json_line(&l),
            r#"{"type":"lost","time":3.0,"ringbuf_drops":3,"read_errors":0,"map_full":0,"missed_entry":0,"decode_errors":1}"#
        );
    }

    #[test]
    fn json_cleanup_net() {
        let start = Record::CleanupNet(CleanupNetRec {
            containers: None,
            time_ns: 5_000_000_000,
            phase: "start",
            duration_ns: None,
            netns: vec![11, 12],
            teardown_ns: None,
            pid: 93,
            comm: "kworker/u4:1".into(),
        });
        assert_eq!(
            json_line(&start),
            r#"{"type":"cleanup_net","time":5.0,"phase":"start","netns":[11,12],"pid":93,"comm":"kworker/u4:1"}"#
        );
        let end = Record::CleanupNet(CleanupNetRec {
            containers: None,
            time_ns: 6_500_000_000,
            phase: "end",
            duration_ns: Some(None),
            netns: vec![11, 12],
            teardown_ns: Some(vec![Some(2_000_000_000), None]),
            pid: 93,
            comm: "kworker/u4:1".into(),
        });
        assert_eq!(
            json_line(&end),
            r#"{"type":"cleanup_net","time":6.5,"phase":"end","duration_us":null,"netns":[11,12],"teardown_us":[2000000,null],"pid":93,"comm":"kworker/u4:1"}"#
        );
        assert_eq!(
            human(&end),
            "   6.500 cleanup_net            -      93 kworker/u4:1     end dur=? batch=2 teardown 11=2.0s,12=?"
        );
        assert_eq!(
            human(&start),
            "   5.000 cleanup_net            -      93 kworker/u4:1     start batch=2 netns=11,12"
        );
        let many = Record::CleanupNet(CleanupNetRec {
            containers: None,
            time_ns: 0,
            phase: "start",
            duration_ns: None,
            netns: (1..=10).collect(),
            teardown_ns: None,
            pid: 1,
            comm: "k".into(),
        });
        assert!(human(&many).ends_with("start batch=10 netns=1,2,3,4,5,6,7,8,+2 more"));
    }

    #[test]
    fn human_lines() {
        let mut r = Renderer::new(false);
        assert_eq!(
            r.render(&create()),
            " TIME(s) EVENT              NETNS     PID COMM             DETAIL\n  12.345 netns_create  4026532281     812 dockerd          flags=CLONE_NEWNET dur=1.2ms\n"
        );
        assert_eq!(
            r.render(&dev_wait()),
            "  15.001 dev_wait      4026532281      93 kworker/u4:1     lo ifindex=1 usage_count=2 waiting=3.0s\n"
        );
        let Record::DevWait(mut d) = dev_wait() else {
            unreachable!()
        };
        d.wait_since = "first_seen";
        d.device = "ev\x1b[2Jil".into();
        assert!(human(&Record::DevWait(d))
            .contains(" ev\\x1b[2Jil ifindex=1 usage_count=2 waiting>=3.0s"));
        let Record::DevWait(mut d) = dev_wait() else {
            unreachable!()
        };
        d.usage_count_at = Some(14_500_000_000);
        assert!(human(&Record::DevWait(d)).contains(" usage_count=2 (read at 14.500) waiting=3.0s"));
        let Record::NetnsCreate(mut c) = create() else {
            unreachable!()
        };
        c.err = -28;
        c.duration_ns = None;
        c.source = "fork";
        c.flags = 0x5000_0000 | 0x11;
        c.comm = "a\tb".into();
        assert_eq!(
            human(&Record::NetnsCreate(c)),
            "  12.345 netns_create  4026532281     812 a\\x09b           flags=CLONE_NEWNET|CLONE_NEWUSER|0x11 error=ENOSPC via=fork"
        );
        let l = Record::Lost(LostRec {
            time_ns: 1_000_000,
            counts: LostCounts {
                map_full: 2,
                ..Default::default()
            },
        });
        assert_eq!(
            human(&l),
            "   0.001 lost                   -       - -                ringbuf_drops=0 read_errors=0 map_full=2 missed_entry=0 decode_errors=0 (totals)"
        );
        let rt = Record::RtnlUnlock(RtnlUnlockRec {
            time_ns: 0,
            duration_ns: 850_000,
            caller: None,
            caller_addr: 0,
            pid: 9,
            comm: "k".into(),
        });
        assert_eq!(
            human(&rt),
            "   0.000 rtnl_unlock            -       9 k                dur=850us caller=?"
        );
    }

    fn neighbour() -> HolderRec {
        HolderRec {
            kind: "neighbour",
            obj: 0xff3c066a81aba600,
            address: Some("127.0.0.66".into()),
            family: Some("ipv4"),
            created_ns: Some(4_820_000_000),
            pid: 180,
            comm: "insmod".into(),
            stack: vec![
                "__neigh_create+0x1f".into(),
                "netns_leak_init+0x99 [netns_leak]".into(),
                "do_one_initcall+0x4a".into(),
            ],
            found_by: "trace",
            socket: None,
        }
    }

    #[test]
    fn holder_block() {
        let Record::DevWait(mut d) = dev_wait() else {
            unreachable!()
        };
        d.time_ns = 4_884_000_000;
        d.netns = 4026532115;
        d.pid = 12;
        d.comm = "kworker/u8:0".into();
        d.waiting_ns = 0;
        d.holders = vec![neighbour()];
        d.attributed = 1;
        d.unattributed = 0;
        d.block = true;
        assert_eq!(
            human(&Record::DevWait(d.clone())),
            "   4.884 dev_wait      4026532115      12 kworker/u8:0     lo ifindex=1 usage_count=2 waiting=0.0s\n\
             \x20        lo of netns 4026532115: usage count 2 (1 is the device's own), waiting 0.0s\n\
             \x20          neighbour 127.0.0.66 on lo, created by pid 180 (insmod) at t+4.82 s\n\
             \x20            stack: __neigh_create+0x1f <- netns_leak_init+0x99 [netns_leak] <- do_one_initcall+0x4a\n\
             \x20          unattributed: 0"
        );
        let j = json_line(&Record::DevWait(d.clone()));
        assert!(
            j.ends_with(r#""holders":[{"kind":"neighbour","obj":"0xff3c066a81aba600","address":"127.0.0.66","family":"ipv4","created":4.82,"pid":180,"comm":"insmod","stack":["__neigh_create+0x1f","netns_leak_init+0x99 [netns_leak]","do_one_initcall+0x4a"],"found_by":"trace","socket":null}],"attributed":1,"unattributed":0,"over":0,"complete":true}"#),
            "{j}"
        );
        // A socket's dst (IPv6), a long stack, a pre-5.13 count, a lower
        // bound on the wait, lost events and objects over the count.
        let mut dst = neighbour();
        dst.kind = "dst";
        dst.address = None;
        dst.created_ns = None;
        dst.comm = "ev\x1b[2Jil".into();
        dst.stack = (0..8).map(|i| format!("f{i}")).collect();
        dst.socket = Some(SocketBrief {
            sk: 0xffff888005550000,
            saddr: "::1".into(),
            sport: 44321,
            daddr: "::1".into(),
            dport: 80,
            state: "ESTABLISHED".into(),
            kernel: true,
        });
        d.holders = vec![dst];
        d.baseline = 0;
        d.wait_since = "first_seen";
        d.complete = false;
        d.over = 2;
        let h = human(&Record::DevWait(d));
        let lines: Vec<&str> = h.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "         lo of netns 4026532115: usage count 2, waiting at least 0.0s",
                "           dst of socket [::1]:44321 -> [::1]:80 ESTABLISHED (kernel) on lo, created by pid 180 (ev\\x1b[2Jil) before attach",
                "             stack: f0 <- f1 <- f2 <- f3 <- f4 <- f5 <- ...",
                "           unattributed: 0 (events were lost: ledger incomplete)",
                "           over: 2 more tracked objects than references (oldest left out; releases were missed)",
            ]
        );
    }

    #[test]
    fn summary_lists_holders() {
        let mut sum = summary();
        sum.devices_still_waiting[0].holders = vec![neighbour()];
        sum.devices_still_waiting[0].unattributed = 0;
        let h = human(&Record::Summary(sum));
        assert!(
            h.contains(
                "still waiting:        lo in netns 4026532282 usage_count=2 waiting=30.0s\n                        \
                 neighbour 127.0.0.66 on lo, created by pid 180 (insmod) at t+4.82 s\n                          \
                 stack: __neigh_create+0x1f <- netns_leak_init+0x99 [netns_leak] <- do_one_initcall+0x4a\n                        \
                 unattributed: 0\n"
            ),
            "{h}"
        );
    }

    #[test]
    fn json_renderer_has_no_header() {
        let mut r = Renderer::new(true);
        assert!(r.render(&dev_wait()).starts_with("{\"type\":\"dev_wait\""));
        assert!(r.render(&dev_wait()).ends_with("}\n"));
    }

    fn summary() -> SummaryRec {
        SummaryRec {
            duration_ns: 60_000_000_000,
            netns_created: 3,
            netns_destroyed: 2,
            cleanup_batches: 1,
            slowest_teardown_ns: Some(3_400_000_000),
            slowest_teardown_netns: Some(4026532281),
            netns_pending: vec![4026532282],
            devices_still_waiting: vec![StillWaiting {
                container: Container::Off,
                netns: 4026532282,
                device: "lo".into(),
                refcnt: 2,
                waiting_ns: 30_000_000_000,
                holders: vec![],
                unattributed: 1,
                over: 0,
            }],
            events_read: 250,
            ring_wakeups: 12,
            lost: LostCounts {
                ringbuf_drops: 4,
                ..Default::default()
            },
            bpf_programs: None,
        }
    }

    #[test]
    fn summary_both_formats() {
        let s = Record::Summary(summary());
        assert_eq!(
            json_line(&s),
            r#"{"type":"summary","duration_s":60.0,"netns_created":3,"netns_destroyed":2,"cleanup_batches":1,"slowest_teardown_us":3400000,"slowest_teardown_netns":4026532281,"netns_pending":[4026532282],"devices_still_waiting":[{"netns":4026532282,"device":"lo","refcnt":2,"waiting_s":30.0,"holders":[],"unattributed":1,"over":0}],"events_read":250,"ring_wakeups":12,"lost":{"ringbuf_drops":4,"read_errors":0,"map_full":0,"missed_entry":0,"decode_errors":0}}"#
        );
        let mut r = Renderer::new(false);
        assert_eq!(
            r.render(&s),
            "--- summary: 60.000 s ---\n\
             namespaces created:   3\n\
             namespaces destroyed: 2\n\
             cleanup batches:      1\n\
             slowest teardown:     3.4s (netns 4026532281)\n\
             pending cleanup:      4026532282\n\
             still waiting:        lo in netns 4026532282 usage_count=2 waiting=30.0s\n\
             \x20                       unattributed: 1\n\
             lost events:          ringbuf_drops=4 read_errors=0 map_full=0 missed_entry=0 decode_errors=0\n"
        );
        let empty = SummaryRec {
            slowest_teardown_ns: None,
            slowest_teardown_netns: None,
            netns_pending: vec![],
            devices_still_waiting: vec![],
            lost: LostCounts::default(),
            ..summary()
        };
        let h = human(&Record::Summary(empty));
        assert!(h.contains("slowest teardown:     -\n"));
        assert!(h.contains("still waiting:        none\nlost events:          none"));
        assert!(!h.contains("bpf programs"));
    }

    #[test]
    fn summary_with_bpf_stats() {
        let prog = |name: &str, runs: u64, ns: u64| BpfProgStat {
            program: name.into(),
            runs,
            run_time_us: ns / 1000,
            avg_ns: ns.checked_div(runs).unwrap_or(0),
        };
        let s = Record::Summary(SummaryRec {
            bpf_programs: Some(vec![
                prog("copy_net_ns_exit", 100, 250_000),
                prog("watch_hit", 0, 0),
            ]),
            ..summary()
        });
        assert!(json_line(&s).ends_with(
            r#""bpf_programs":[{"program":"copy_net_ns_exit","runs":100,"run_time_us":250,"avg_ns":2500},{"program":"watch_hit","runs":0,"run_time_us":0,"avg_ns":0}]}"#
        ));
        let h = human(&s);
        assert!(
            h.ends_with(
                "bpf programs:         copy_net_ns_exit       runs=100 total=250us avg=2500ns\n\
                 \x20                     watch_hit              runs=0 total=0us avg=0ns"
            ),
            "{h}"
        );
    }

    #[test]
    fn attach_record() {
        let rec = Record::Attach(AttachRec {
            hooks: vec![HookRow {
                hook: "copy_net_ns".into(),
                symbol: "copy_net_ns".into(),
                status: "found".into(),
                method: "-".into(),
                note: "no kprobe support".into(),
            }],
            exact_sources: ExactSources {
                created: "watchpoints",
                stuck: "watchpoints",
                ref_tracker_unused: Some("ref_tracker_alloc: not in kallsyms".into()),
            },
            degraded: true,
            reasons: vec!["copy_net_ns: no kprobe support; using unshare instead".into()],
            attach_ms: 42,
            phases_ms: AttachPhases {
                prepare: 20,
                load: 15,
                attach: 7,
            },
            symbols_from: "kallsyms_lookup_name",
        });
        assert_eq!(
            json_line(&rec),
            r#"{"type":"attach","hooks":[{"hook":"copy_net_ns","symbol":"copy_net_ns","status":"found","method":"-","note":"no kprobe support"}],"exact_sources":{"created":"watchpoints","stuck":"watchpoints","ref_tracker_unused":"ref_tracker_alloc: not in kallsyms"},"degraded":true,"reasons":["copy_net_ns: no kprobe support; using unshare instead"],"attach_ms":42,"phases_ms":{"prepare":20,"load":15,"attach":7},"symbols_from":"kallsyms_lookup_name"}"#
        );
        assert_eq!(
            human(&rec),
            "HOOK         SYMBOL       STATUS  METHOD  NOTE\n\
             copy_net_ns  copy_net_ns  found   -       no kprobe support\n\
             exact counting: new loopback devices: watchpoints; devices found stuck: watchpoints (ref_tracker not used: ref_tracker_alloc: not in kallsyms)\n\
             attached in 42 ms; DEGRADED:\n  \
             - copy_net_ns: no kprobe support; using unshare instead"
        );
    }

    /// Every example in docs/events.md is valid JSON with `type` first,
    /// and every record type is documented.
    #[test]
    fn docs_examples_are_valid() {
        let doc = include_str!("../../docs/events.md");
        let mut types = Vec::new();
        for block in doc.split("```json\n").skip(1) {
            for l in block.split("```").next().unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect(l);
                assert!(l.starts_with("{\"type\":"), "{l}");
                types.push(v["type"].as_str().unwrap().to_string());
            }
        }
        for t in [
            "netns_create",
            "netns_destroy",
            "cleanup_net",
            "rtnl_unlock",
            "dev_wait",
            "dev_released",
            "socket",
            "watch",
            "scan",
            "blocked",
            "incident",
            "lost",
            "attach",
            "summary",
            "run_report",
        ] {
            assert!(types.iter().any(|x| x == t), "{t} has no example");
            assert!(doc.contains(&format!("## `{t}`")), "{t} has no section");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(escape("kworker/0:1"), "kworker/0:1");
        assert_eq!(
            escape("a\x1bb\\c\n\u{7f}\u{85}"),
            "a\\x1bb\\\\c\\x0a\\x7f\\x85"
        );
        assert_eq!(fmt_duration(0), "0us");
        assert_eq!(fmt_duration(999_999), "999us");
        assert_eq!(fmt_duration(1_250_000), "1.2ms");
        assert_eq!(fmt_duration(61_000_000_000), "61.0s");
        assert_eq!(fmt_clone_flags(0), "0x0");
        assert_eq!(
            fmt_clone_flags(0x4000_0000 | 0x0002_0000),
            "CLONE_NEWNET|CLONE_NEWNS"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339(4_102_444_799_999_999_999),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn wall_clock_and_colour() {
        assert_eq!(time_of_day(1_714_566_896_789_000_000, 0), "12:34:56.789");
        assert_eq!(time_of_day(1_714_566_896_789_000_000, 7200), "14:34:56.789");
        assert_eq!(
            time_of_day(1_714_523_000_000_000_000, -3600),
            "23:23:20.000"
        );
        let start = 1_714_566_884_444_600_000; // create() is at +12.3454 s
        let mut r = Renderer::with_style(
            false,
            HumanStyle {
                color: false,
                wall: Some((start, 0)),
            },
        );
        let text = r.render(&create());
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("WALL          TIME(s) EVENT"));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("12:34:56.790   12.345 netns_create"),
            "{text}"
        );
        // Continuation lines of a block are indented past the wall column.
        let Record::DevWait(mut d) = dev_wait() else {
            panic!()
        };
        d.block = true;
        let block = r.render(&Record::DevWait(d));
        let second = block.lines().nth(1).unwrap();
        assert!(second.starts_with(&" ".repeat(13 + 9)), "{block:?}");
        assert!(!block.contains('\x1b'));
        let mut c = Renderer::with_style(
            false,
            HumanStyle {
                color: true,
                wall: None,
            },
        );
        let text = c.render(&dev_wait());
        assert!(text.contains("\x1b[1;31mdev_wait\x1b[0m"), "{text:?}");
        assert_eq!(text.matches('\x1b').count(), 2, "only the event name");
        // JSON is never coloured.
        let mut j = Renderer::with_style(
            true,
            HumanStyle {
                color: true,
                wall: Some((start, 0)),
            },
        );
        assert!(!j.render(&dev_wait()).contains('\x1b'));
    }
}
