//! Builds the eBPF programs (netns-trace-ebpf) for the bpf target with the
//! installed nightly toolchain and bpf-linker (see `cargo xtask setup`).
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "netns-trace-ebpf")
        .ok_or_else(|| anyhow!("netns-trace-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // NETNS_TRACE_EBPF_TOOLCHAIN overrides the toolchain (e.g. a pinned
    // nightly); the default is the machine's `nightly` (LLVM 22, checked by
    // `cargo xtask setup`), never updated.
    println!("cargo:rerun-if-env-changed=NETNS_TRACE_EBPF_TOOLCHAIN");
    let custom = std::env::var("NETNS_TRACE_EBPF_TOOLCHAIN").ok();
    let toolchain = match custom.as_deref() {
        Some(name) if !name.is_empty() => Toolchain::Custom(name),
        _ => Toolchain::Nightly,
    };
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        toolchain,
    )
}
