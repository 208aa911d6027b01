//! The `6.12-reftrack` test kernel: no Debian build has
//! CONFIG_NET_DEV_REFCNT_TRACKER, so this one is built here from Debian's
//! `linux-source-6.12` with a small config (xtask/kernel/reftrack.config on
//! top of `make tinyconfig`), to test the tracer's ref_tracker source. A
//! marker holding the config fragment makes reruns free until it changes.
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::{cache_dir, run_cmd, Kernel};

/// Its name for `--kernel`, and its directory under `.cache/kernels`.
pub const SHORT: &str = "6.12-reftrack";

/// What runs on it in `--scenario all`: the ref_tracker source with and
/// without `--exact`. The config has no veth, bridge, overlay or netfilter
/// (docker), and the other scenarios test nothing the tracker changes.
pub const SCENARIOS: &[&str] = &["neigh", "exact", "exact-neigh"];

const FRAGMENT: &str = include_str!("../kernel/reftrack.config");
const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_DIR: &str = "linux-source-6.12";

/// The kernel, built unless its marker says this fragment was built.
pub fn ensure() -> Result<Kernel> {
    let dir = cache_dir().join("kernels").join(SHORT);
    let src = dir.join(SOURCE_DIR);
    let kernel = Kernel {
        short: SHORT.to_string(),
        abi: SHORT.to_string(),
        vmlinuz: src.join("arch/x86/boot/bzImage"),
        headers: src.clone(),
    };
    let marker = dir.join(".built");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == FRAGMENT) {
        println!("setup: kernel {SHORT} already built");
        return Ok(kernel);
    }
    let started = Instant::now();
    if !src.join("Makefile").exists() {
        unpack_source(&dir)?;
    }
    configure(&src)?;
    build(&src)?;
    check_symbols(&src)?;
    std::fs::write(&marker, FRAGMENT)?;
    println!(
        "setup: kernel {SHORT} built in {:.0} s (download, unpack, configure, build)",
        started.elapsed().as_secs_f64()
    );
    Ok(kernel)
}

/// `apt-get download linux-source-6.12`, then the tarball inside it.
fn unpack_source(dir: &Path) -> Result<()> {
    println!("setup: downloading {SOURCE_PACKAGE} (about 150 MB)");
    let _ = std::fs::remove_dir_all(dir);
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    run_cmd(
        Command::new("apt-get")
            .args(["download", SOURCE_PACKAGE])
            .current_dir(&debs),
    )?;
    let pkg = dir.join("pkg");
    for deb in std::fs::read_dir(&debs)? {
        run_cmd(Command::new("dpkg").arg("-x").arg(deb?.path()).arg(&pkg))?;
    }
    let tarball = pkg.join(format!("usr/src/{SOURCE_DIR}.tar.xz"));
    println!("setup: unpacking {}", tarball.display());
    run_cmd(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir),
    )?;
    std::fs::remove_dir_all(&debs)?;
    std::fs::remove_dir_all(&pkg)?;
    Ok(())
}

/// tinyconfig + the fragment + olddefconfig; every `=y` of the fragment
/// must survive (Kconfig silently drops an option whose dependencies are
/// not met).
fn configure(src: &Path) -> Result<()> {
    println!("setup: configuring {SHORT} (tinyconfig + xtask/kernel/reftrack.config)");
    let make = |target: &str| run_cmd(Command::new("make").arg("-s").arg(target).current_dir(src));
    make("tinyconfig")?;
    let fragment = src.join("reftrack.config");
    std::fs::write(&fragment, FRAGMENT)?;
    run_cmd(
        Command::new("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .arg(&fragment)
            .stdout(Stdio::null())
            .current_dir(src),
    )?;
    run_cmd(
        Command::new("scripts/config")
            .args(["--set-str", "LOCALVERSION", "-reftrack"])
            .current_dir(src),
    )?;
    make("olddefconfig")?;
    let config = std::fs::read_to_string(src.join(".config"))?;
    let lost = missing_options(FRAGMENT, &config);
    if !lost.is_empty() {
        bail!(
            "the kernel config dropped {} (their dependencies are not met): fix xtask/kernel/reftrack.config",
            lost.join(", ")
        );
    }
    Ok(())
}

/// The `CONFIG_X=y` lines of `fragment` that `config` does not have.
fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .filter(|l| !config.lines().any(|c| c.trim() == *l))
        .map(str::to_string)
        .collect()
}

/// `make bzImage modules` (modules: Module.symvers for building the test
/// module against this tree), logged to build.log; every linked object is
/// printed as progress.
fn build(src: &Path) -> Result<()> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let log_path = src.join("build.log");
    println!(
        "setup: building {SHORT} with make -j{jobs} (log {}); 7 to 15 minutes on 2 cores",
        log_path.display()
    );
    let mut log = std::fs::File::create(&log_path)?;
    let mut child = Command::new("make")
        .arg(format!("-j{jobs}"))
        .args(["bzImage", "modules"])
        .current_dir(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run make (run cargo xtask setup: build-essential)")?;
    let started = Instant::now();
    let out = child.stdout.take().context("make has no stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        if is_progress(&line) {
            println!(
                "setup: {SHORT} [{:>4.0} s] {}",
                started.elapsed().as_secs_f64(),
                line.trim()
            );
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "building {SHORT} failed ({status}): see {}",
            log_path.display()
        );
    }
    Ok(())
}

/// Kbuild lines worth showing: links, BTF, the final image.
fn is_progress(line: &str) -> bool {
    let l = line.trim_start();
    ["LD ", "AR ", "BTF ", "Kernel:", "MODPOST", "BTFIDS"]
        .iter()
        .any(|p| l.starts_with(p))
}

/// The point of this kernel: the tracker's functions are real symbols.
fn check_symbols(src: &Path) -> Result<()> {
    let map = std::fs::read_to_string(src.join("System.map"))?;
    for sym in [
        "ref_tracker_alloc",
        "ref_tracker_free",
        "ref_tracker_dir_exit",
    ] {
        if !map
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(sym))
        {
            bail!("{sym} is not in the built kernel's System.map: CONFIG_NET_DEV_REFCNT_TRACKER did not take");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_options_are_named() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_S=\"x\"\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\n";
        assert_eq!(missing_options(fragment, config), ["CONFIG_B=y"]);
        assert!(missing_options(fragment, "CONFIG_B=y\nCONFIG_A=y\n").is_empty());
    }

    #[test]
    fn progress_lines() {
        assert!(is_progress("  LD      vmlinux.o"));
        assert!(is_progress("Kernel: arch/x86/boot/bzImage is ready  (#1)"));
        assert!(!is_progress("  CC      kernel/fork.o"));
    }
}
