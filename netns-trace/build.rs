//! Builds the eBPF programs (netns-trace-ebpf) for the bpf target with the
//! installed nightly toolchain and bpf-linker (see `cargo xtask setup`).
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    git_commit();
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

/// `NETNS_TRACE_GIT_COMMIT` for `--version`: the short commit, `-dirty`
/// when the tree has changes, `unknown` outside a git checkout.
fn git_commit() {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{c}{}", if dirty { "-dirty" } else { "" })
        }
        _ => "unknown".into(),
    };
    println!("cargo:rustc-env=NETNS_TRACE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout) or the index changes.
    for path in ["HEAD", "index"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
