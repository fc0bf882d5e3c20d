use std::process::ExitCode;

fn main() -> ExitCode {
    orchestrate::cli::main(std::env::args_os())
}
