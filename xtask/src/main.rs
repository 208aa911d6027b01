//! Developer verbs: `cargo xtask setup`, `cargo xtask test`, `cargo xtask vm-test`.
mod setup;
mod test;
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
    /// Boot a stock Debian kernel under QEMU, make lo of a dying namespace
    /// stuck, and show what netns-trace prints (kernel defaults to 6.12).
    Demo(vm::VmTestArgs),
    /// Run `netns-trace doctor` (and list the hook symbols) inside a stock
    /// Debian kernel under QEMU (kernel defaults to 6.12).
    VmDoctor(vm::VmTestArgs),
    /// The whole test suite: lint, unit and host tests, real-kernel tests.
    Test {
        /// Skip the QEMU real-kernel tests (they are the slow part).
        #[arg(long)]
        skip_vm: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::VmTest(args) => vm::run(args),
        Cmd::Demo(args) => vm::demo(in_guest(args, "demo")),
        Cmd::VmDoctor(args) => vm::demo(in_guest(args, "doctor")),
        Cmd::Test { skip_vm } => test::run(skip_vm),
    }
}

/// One kernel (6.12 unless told) and one fixed scenario.
fn in_guest(mut args: vm::VmTestArgs, scenario: &str) -> vm::VmTestArgs {
    if args.kernel == "all" {
        args.kernel = "6.12".into();
    }
    args.scenario = scenario.into();
    args
}
