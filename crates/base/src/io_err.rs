//! The one shape of a failed file operation in an error: what was being done, to which path,
//! and the OS error (`failed to write /x/y: No space left on device`).
//!
//! Owns: the closure every module hands to `map_err` to turn an `io::Error` into its own error
//! type's `Io` variant. Does not own those variants nor their wording: each module's error enum
//! keeps its own (the words stay the module's, the path goes in a field, the cause in
//! `#[source]`).

use std::io;
use std::path::{Path, PathBuf};

/// An error type with a variant for a failed file operation.
pub trait FromIo: Sized {
    /// The `Io { action, path, source }` variant.
    fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self;

    /// For `map_err`: `fs::read(path).map_err(QueueError::io_err("read", path))`.
    fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::from_io(action, path.to_path_buf(), source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failed(&'static str, PathBuf, io::ErrorKind);

    impl FromIo for Failed {
        fn from_io(action: &'static str, path: PathBuf, source: io::Error) -> Self {
            Failed(action, path, source.kind())
        }
    }

    #[test]
    fn the_closure_keeps_action_path_and_cause() {
        let path = Path::new("/nonexistent/orchestrate/file");
        let err = std::fs::read(path)
            .map_err(Failed::io_err("read", path))
            .unwrap_err();
        assert_eq!(err.0, "read");
        assert_eq!(err.1, path);
        assert_eq!(err.2, io::ErrorKind::NotFound);
    }
}
