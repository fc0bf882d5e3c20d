//! The command line documented: `completions` (a shell's completion script) and `man` (the
//! manual pages), both made from the parser's own definition.
//!
//! Does not define the commands (`cli` does and hands its `clap::Command` in).

use std::path::Path;
use std::process::ExitCode;

use crate::error::{Error, Outcome};

/// `orchestrate completions SHELL`: the completion script on stdout.
pub(crate) fn completions(shell: clap_complete::Shell, mut cli: clap::Command) -> Outcome {
    clap_complete::generate(shell, &mut cli, "orchestrate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// `orchestrate man`: the page on stdout, or every command's page written into `dir`.
pub(crate) fn man(dir: Option<&Path>, cli: clap::Command) -> Outcome {
    let written = match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cli, dir))
            .map(|()| eprintln!("man pages written to {}", dir.display())),
        None => clap_mangen::Man::new(cli).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `orchestrate man | head` is not a failure.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(err) => {
            let target = dir.map_or("stdout".into(), |d| d.display().to_string());
            Err(Error::failed(format!(
                "failed to write the man page to {target}: {err}"
            )))
        }
    }
}
