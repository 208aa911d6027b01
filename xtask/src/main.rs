//! Developer verbs: `cargo xtask setup`, `cargo xtask vm-test`.
mod setup;
mod vm;
mod vm_assert;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install build/test dependencies and download the test kernels (idempotent).
    Setup,
    /// Boot the test kernels under QEMU and run scenarios against the tracer.
    VmTest(vm::VmTestArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::VmTest(args) => vm::run(args),
    }
}
