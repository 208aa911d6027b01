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
        Cmd::Demo(mut args) => {
            if args.kernel == "all" {
                args.kernel = "6.12".into();
            }
            vm::demo(args)
        }
        Cmd::Test { skip_vm } => test::run(skip_vm),
    }
}
