//! The pure parts of the netns-trace loader: argument handling, symbol
//! tables, the attach plan, event decoding, session state and rendering.
//! Nothing here needs root or touches the kernel beyond reading files.

pub mod backoff;
pub mod blocked;
pub mod cli;
pub mod containers;
pub mod events;
pub mod exact;
pub mod idmap;
pub mod insn;
pub mod json_fast;
pub mod kallsyms;
pub mod kernel;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod output;
pub mod perf_ring;
pub mod plan;
pub mod report;
pub mod session;
pub mod sources;
