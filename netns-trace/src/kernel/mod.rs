//! The parts of the loader that read the running kernel's facts: BTF
//! offsets, capabilities, tracefs layouts.
pub mod btf;
pub mod btf_raw;
pub mod caps;
pub mod tracefs;
