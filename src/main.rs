//! The `orchestrate` binary: every command is in the library (`orchestrate::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    // Signals are how the swarm and the engine stop things: none may stay blocked from whatever
    // started us (our threads and steps would inherit the mask).
    orchestrate_base::process::unblock_signals();
    // Fault points for the chaos tests (`--features failpoints`); nothing otherwise.
    let _faults = orchestrate_queue::fault::setup();
    orchestrate::cli::main(std::env::args_os())
}
