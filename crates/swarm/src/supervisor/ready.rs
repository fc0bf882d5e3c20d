//! The ready handshake: a pipe whose write end a replica inherits (its number in
//! [`READY_FD_ENV`]) and writes `ready\n` to once it is ready, and the read end its actor waits on.
//!
//! Does not time the wait out (the actor does) nor write the line (the role process does).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Environment variable naming the descriptor a child writes `ready\n` to once it is ready.
pub(crate) const READY_FD_ENV: &str = "ORCHESTRATE_READY_FD";

/// The line a child writes to the ready descriptor.
const READY_LINE: &[u8] = b"ready";

/// Bytes kept while looking for the ready line; a child writing more without a newline is
/// talking nonsense and its buffer is dropped.
const MAX_READY_LINE: usize = 4096;

/// A close-on-exec pipe whose ends are above the standard descriptors (so that setting up the
/// child's stdio cannot clobber the write end).
pub(super) fn ready_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read_end)?, above_stdio(write_end)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// The read end of a replica's ready pipe.
pub(super) struct ReadyPipe {
    rx: Option<pipe::Receiver>,
    buf: Vec<u8>,
}

impl ReadyPipe {
    pub(super) fn new(fd: OwnedFd) -> ReadyPipe {
        ReadyPipe {
            // Without it the replica can never report ready and the ready timeout restarts it,
            // which is loud enough for a failure that needs a broken kernel.
            rx: pipe::Receiver::from_owned_fd(fd).ok(),
            buf: Vec::new(),
        }
    }

    /// True once a `ready` line arrived; false (once) when the pipe closed without one, after
    /// which it never resolves. Cancel-safe: partial lines are kept in `buf`.
    pub(super) async fn wait(&mut self) -> bool {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.trim_ascii() == READY_LINE {
                    return true;
                }
                continue;
            }
            if self.buf.len() > MAX_READY_LINE {
                self.buf.clear();
            }
            let Some(rx) = self.rx.as_mut() else {
                return std::future::pending().await;
            };
            let mut chunk = [0u8; 256];
            match rx.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => {
                    self.rx = None;
                    return false;
                }
            }
        }
    }
}
