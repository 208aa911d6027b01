//! `cargo xtask test`: the whole suite, in the order that fails fastest.
//! 1. lint (rustfmt, clippy -D warnings, the eBPF crate's too), 2. unit + host tests (`cargo
//! test`; the host tests need root and skip themselves otherwise),
//! 3. real kernels (`vm-test`: Debian's 6.1 and 6.12 with every scenario,
//!    the 6.12-reftrack kernel built by setup with its own).
use std::process::Command;

use anyhow::Result;

use crate::setup::{repo_root, run_cmd};

pub fn run(skip_vm: bool) -> Result<()> {
    let root = repo_root();
    let cargo = |args: &[&str]| -> Result<()> {
        println!("test: cargo {}", args.join(" "));
        run_cmd(Command::new("cargo").args(args).current_dir(&root))
    };
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    ebpf_clippy()?;
    // Release, like the binary the VM tests run: one build serves both.
    cargo(&["test", "--release"])?;
    validate_manifests()?;
    if skip_vm {
        println!("test: --skip-vm given: real-kernel tests NOT run");
        return Ok(());
    }
    crate::vm::run(crate::vm::VmTestArgs::all())
}

/// clippy on the eBPF crate, which the workspace lint cannot reach (it is
/// not a default member: it only builds for the BPF target, with the
/// nightly toolchain netns-trace/build.rs uses and core built from source).
fn ebpf_clippy() -> Result<()> {
    let toolchain = std::env::var("NETNS_TRACE_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "nightly".into());
    let args = [
        format!("+{toolchain}"),
        "clippy".into(),
        "-p".into(),
        "netns-trace-ebpf".into(),
        "--target".into(),
        "bpfel-unknown-none".into(),
        "-Z".into(),
        "build-std=core".into(),
        "--release".into(),
        "--".into(),
        "-D".into(),
        "warnings".into(),
    ];
    println!("test: cargo {}", args.join(" "));
    // Its own target directory: the BPF build must not evict the host's.
    run_cmd(
        Command::new("cargo")
            .args(&args)
            .env("CARGO_TARGET_DIR", repo_root().join("target/ebpf-clippy"))
            .current_dir(repo_root()),
    )
}

/// The Kubernetes version the manifests are checked against.
const KUBE_VERSION: &str = "1.33.0";

/// deploy/daemonset.yaml against the official Kubernetes schema (strict:
/// unknown fields fail), and a broken copy of it must fail, so a validator
/// that accepts anything cannot pass this step.
pub fn validate_manifests() -> Result<()> {
    use anyhow::{bail, Context as _};
    let bin = crate::setup::kube_validator_bin();
    if !bin.exists() {
        bail!("{} is missing: run `cargo xtask setup`", bin.display());
    }
    let manifest = repo_root().join("deploy/daemonset.yaml");
    let validate = |path: &std::path::Path| -> Result<std::process::Output> {
        Command::new(&bin)
            .args(["--strict", "--kubernetes-version", KUBE_VERSION])
            .arg(path)
            .output()
            .with_context(|| format!("running {}", bin.display()))
    };
    println!("test: kubernetes-validate --strict -k {KUBE_VERSION} deploy/daemonset.yaml");
    let out = validate(&manifest)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!(
            "deploy/daemonset.yaml does not validate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&manifest)?;
    let broken = text.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1);
    if broken == text {
        bail!("deploy/daemonset.yaml has no `hostPID: true`");
    }
    let tmp = std::env::temp_dir().join(format!("nt-broken-{}.yaml", std::process::id()));
    std::fs::write(&tmp, broken)?;
    let out = validate(&tmp)?;
    let _ = std::fs::remove_file(&tmp);
    if out.status.success() {
        bail!(
            "kubernetes-validate accepted a manifest with an unknown field: it is not validating"
        );
    }
    println!("test: a manifest with an unknown field is rejected, as it must be");
    Ok(())
}
