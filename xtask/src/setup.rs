//! `cargo xtask setup`: everything a fresh Debian 12 machine needs to build
//! the tracer and run `vm-test`. Every step checks first, so reruns are cheap.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Test kernels: (short name, Debian ABI string). Debian's stock cloud builds,
/// so tests run against the inlining and config users actually have.
pub const KERNELS: &[(&str, &str)] = &[
    ("6.1", "6.1.0-50-cloud-amd64"),
    ("6.12", "6.12.111+deb12-cloud-amd64"),
];

const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "dwarves",
    "kmod",
    "bpftool",
    // cargo xtask bench: the attach time of an equivalent bpftrace script.
    "bpftrace",
    // cargo xtask bench: `perf record` on the loader in its profile round.
    "linux-perf",
    // A venv for the Kubernetes manifest validator (kubernetes-validate).
    "python3-venv",
    // Shared libraries of Debian's dockerd and runc, copied into the
    // docker scenario's initramfs from the host (ldd).
    "libdevmapper1.02.1",
    "libseccomp2",
    // Building the 6.12-reftrack test kernel (xtask/src/reftrack.rs).
    "build-essential",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
];

/// Validates deploy/*.yaml against the official Kubernetes schema; the
/// schemas ship inside the package, so it runs offline once installed.
pub const KUBE_VALIDATE_VERSION: &str = "1.37.0";

/// Debian bookworm's Docker, unpacked (never installed) for the docker
/// scenario's guest: the daemon, its containerd and runc.
pub const DOCKER_PACKAGES: &[&str] = &["docker.io", "containerd", "runc"];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    apt_packages()?;
    rust_toolchain()?;
    bpf_linker()?;
    kube_validator()?;
    for short in vm_kernels() {
        ensure_kernel(short)?;
    }
    ensure_docker()?;
    println!("setup: done");
    Ok(())
}

/// The kubernetes-validate executable in its venv under .cache.
pub fn kube_validator_bin() -> PathBuf {
    cache_dir().join("kube-validate/bin/kubernetes-validate")
}

/// kubernetes-validate from PyPI into .cache/kube-validate (a venv of the
/// system Python, so nothing else on the machine changes).
fn kube_validator() -> Result<()> {
    let bin = kube_validator_bin();
    let venv = cache_dir().join("kube-validate");
    if let Ok(v) = output_of(Command::new(&bin).arg("--version")) {
        if v.trim() == KUBE_VALIDATE_VERSION {
            println!("setup: kubernetes-validate {KUBE_VALIDATE_VERSION} already installed");
            return Ok(());
        }
    }
    println!(
        "setup: installing kubernetes-validate {KUBE_VALIDATE_VERSION} into {}",
        venv.display()
    );
    run_cmd(
        Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
    )?;
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(format!("kubernetes-validate=={KUBE_VALIDATE_VERSION}")),
    )
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cache_dir() -> PathBuf {
    repo_root().join(".cache")
}

/// Run a command, failing with its command line when it does not succeed.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Run a command and return its stdout (stderr passes through).
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: apt packages already installed");
        return Ok(());
    }
    println!("setup: apt-get update (missing: {})", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update"))?;
    println!("setup: installing {}", missing.join(" "));
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn rust_toolchain() -> Result<()> {
    let sysroot = output_of(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("a nightly toolchain is needed (rustup toolchain install nightly)")?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust")
        .exists()
    {
        println!("setup: rust-src (nightly) already installed");
    } else {
        println!("setup: installing rust-src for nightly");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    // bpf-linker is built against LLVM 22; rustc's bitcode must be readable by it.
    let vv = output_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if !llvm.starts_with("22") {
        bail!(
            "rustc +nightly uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} here is built \
             for LLVM 22: install a nightly whose `rustc -vV` says LLVM version 22"
        );
    }
    println!("setup: rustc +nightly uses LLVM {llvm}");
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if current == format!("bpf-linker {BPF_LINKER_VERSION}") {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} already installed");
        return Ok(());
    }
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (found: {current:?})");
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
}

/// Every kernel `vm-test --kernel all` boots: Debian's, then the one built
/// here with ref_tracker.
pub fn vm_kernels() -> Vec<&'static str> {
    let mut all: Vec<&str> = KERNELS.iter().map(|(s, _)| *s).collect();
    all.push(crate::reftrack::SHORT);
    all
}

/// One test kernel: image plus a tree to build modules against.
pub struct Kernel {
    pub short: String,
    /// Its name in file names (the Debian ABI string, or the short name).
    pub abi: String,
    pub vmlinuz: PathBuf,
    pub headers: PathBuf,
}

/// One test kernel by its short name: Debian's, downloaded and extracted,
/// or the ref_tracker one, built.
pub fn ensure_kernel(short: &str) -> Result<Kernel> {
    if short == crate::reftrack::SHORT {
        return crate::reftrack::ensure();
    }
    ensure_debian_kernel(short)
}

/// Download and extract one kernel (image, headers, -common headers, kbuild)
/// into `.cache/kernels/<abi>/root`, unless a marker says it is done.
fn ensure_debian_kernel(short: &str) -> Result<Kernel> {
    let abi = KERNELS
        .iter()
        .find(|(s, _)| *s == short)
        .map(|(_, a)| a.to_string())
        .with_context(|| {
            format!(
                "unknown kernel {short} (known: {})",
                vm_kernels().join(", ")
            )
        })?;
    let dir = cache_dir().join("kernels").join(&abi);
    let root = dir.join("root");
    let kernel = Kernel {
        short: short.to_string(),
        abi: abi.clone(),
        vmlinuz: root.join(format!("boot/vmlinuz-{abi}")),
        headers: root.join(format!("usr/src/linux-headers-{abi}")),
    };
    let marker = dir.join(".extracted");
    if marker.exists() {
        println!("setup: kernel {abi} already extracted");
        return Ok(kernel);
    }
    println!("setup: downloading kernel {abi}");
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&debs)?;
    let mut pkgs = vec![format!("linux-image-{abi}"), format!("linux-headers-{abi}")];
    pkgs.extend(header_deps(&abi)?);
    run_cmd(
        Command::new("apt-get")
            .arg("download")
            .args(&pkgs)
            .current_dir(&debs),
    )?;
    for deb in std::fs::read_dir(&debs)? {
        run_cmd(Command::new("dpkg").arg("-x").arg(deb?.path()).arg(&root))?;
    }
    // The headers Makefile includes the -common tree by absolute /usr/src path;
    // point it at our copy (scripts/tools are relative symlinks and just work).
    let makefile = kernel.headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)?;
    let fixed = text.replace("/usr/src/", &format!("{}/usr/src/", root.display()));
    std::fs::write(&makefile, fixed)?;
    if !kernel.vmlinuz.exists() {
        bail!("{} missing after extraction", kernel.vmlinuz.display());
    }
    std::fs::remove_dir_all(&debs)?;
    std::fs::write(&marker, "")?;
    println!("setup: kernel {abi} extracted to {}", root.display());
    Ok(kernel)
}

/// Download and unpack Debian's docker.io, containerd and runc into
/// `.cache/docker/root` (`apt-get download` + `dpkg -x`), unless done.
pub fn ensure_docker() -> Result<PathBuf> {
    let dir = cache_dir().join("docker");
    let root = dir.join("root");
    let marker = dir.join(".extracted");
    if marker.exists() {
        println!("setup: docker packages already extracted");
        return Ok(root);
    }
    println!("setup: downloading {}", DOCKER_PACKAGES.join(" "));
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&debs)?;
    run_cmd(
        Command::new("apt-get")
            .arg("download")
            .args(DOCKER_PACKAGES)
            .current_dir(&debs),
    )?;
    for deb in std::fs::read_dir(&debs)? {
        run_cmd(Command::new("dpkg").arg("-x").arg(deb?.path()).arg(&root))?;
    }
    for bin in DOCKER_BINARIES {
        if !root.join(bin).exists() {
            bail!(
                "{bin} missing after unpacking {}",
                DOCKER_PACKAGES.join(" ")
            );
        }
    }
    std::fs::remove_dir_all(&debs)?;
    std::fs::write(&marker, "")?;
    println!("setup: docker packages extracted to {}", root.display());
    Ok(root)
}

/// What the guest needs of the unpacked packages.
pub const DOCKER_BINARIES: &[&str] = &[
    "usr/sbin/dockerd",
    "usr/bin/docker",
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc",
];

/// The `-common` headers and `linux-kbuild-*` packages named in the headers
/// package's Depends (their names differ between 6.1 and 6.12 packaging).
fn header_deps(abi: &str) -> Result<Vec<String>> {
    let show =
        output_of(Command::new("apt-cache").args(["show", &format!("linux-headers-{abi}")]))?;
    let depends = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .context("no Depends in apt-cache show")?;
    Ok(parse_header_deps(depends))
}

fn parse_header_deps(depends: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for alt in depends.split(',') {
        // First alternative, without version constraint.
        let name = alt
            .split('|')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        let wanted = (name.starts_with("linux-headers-") && name.ends_with("-common"))
            || name.starts_with("linux-kbuild-");
        if wanted && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_deps_of_both_packagings() {
        assert_eq!(
            parse_header_deps("linux-headers-6.1.0-50-common (= 6.1.176-1), linux-kbuild-6.1 (>= 6.1.176-1), linux-compiler-gcc-12-x86"),
            ["linux-headers-6.1.0-50-common", "linux-kbuild-6.1"]
        );
        assert_eq!(
            parse_header_deps("linux-base (>= 4.12~), linux-headers-6.12.111+deb12-common (= 6.12.111-1~deb12u1), linux-image-6.12.111+deb12-cloud-amd64 (= 6.12.111-1~deb12u1) | linux-image-6.12.111+deb12-cloud-amd64-unsigned (= 6.12.111-1~deb12u1), linux-kbuild-6.12.111+deb12, gcc-12"),
            ["linux-headers-6.12.111+deb12-common", "linux-kbuild-6.12.111+deb12"]
        );
    }
}
