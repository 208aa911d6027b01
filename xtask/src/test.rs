//! `cargo xtask test`: the whole suite, in the order that fails fastest.
//! 1. lint (rustfmt, clippy -D warnings), 2. unit + host tests (`cargo
//! test`; the host tests need root and skip themselves otherwise),
//! 3. real kernels (`vm-test`, both kernels, every scenario).
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
    // Release, like the binary the VM tests run: one build serves both.
    cargo(&["test", "--release"])?;
    if skip_vm {
        println!("test: --skip-vm given: real-kernel tests NOT run");
        return Ok(());
    }
    crate::vm::run(crate::vm::VmTestArgs::all())
}
