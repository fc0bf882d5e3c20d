use std::process::ExitCode;

fn main() -> ExitCode {
    // Fault points for the chaos tests (`--features failpoints`); nothing otherwise.
    let _faults = orchestrate_queue::fault::setup();
    orchestrate::cli::main(std::env::args_os())
}
