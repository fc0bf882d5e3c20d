//! Fault points for the chaos tests: places in the queue protocol where a test can kill the
//! process, to prove that a crash after any step loses nothing and runs nothing twice at once.
//!
//! Owns: the `fault!` macro and its action. Compiled to nothing unless the `failpoints` cargo
//! feature is on; then each point is a `fail` crate fail point, configured by the `FAILPOINTS`
//! environment variable (`main` calls [`setup`]). The action `return` (for example
//! `FAILPOINTS=claim.leased=return`, or `2*off->return` for the third time the point is
//! reached) kills this process with SIGKILL right there: no unwinding, no destructors, no
//! buffered output, like `kill -9` at that instant. `fail`'s other actions (`panic`, `sleep`,
//! `pause`, `print`) behave as that crate documents.

/// A fault point: with the `failpoints` feature and `FAILPOINTS` naming it with `return`, the
/// process is SIGKILLed here.
#[cfg(feature = "failpoints")]
macro_rules! fault {
    ($name:literal) => {
        $crate::fault::point($name)
    };
}

/// A fault point: nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! fault {
    ($name:literal) => {};
}

/// Every fault point, for tests and `FAILPOINTS` users.
pub const POINTS: &[&str] = &[
    "enqueue.written",
    "enqueue.synced",
    "enqueue.sidecar",
    "enqueue.renamed",
    "enqueue.dir_synced",
    "claim.locked",
    "claim.dir_made",
    "claim.renamed",
    "claim.leased",
    "complete.status_written",
    "finish.renamed",
    "finish.synced",
    "recover.locked",
    "recover.sidecar_written",
    "recover.status_written",
    "recover.requeued",
    "recover.kept",
];

/// Reads `FAILPOINTS`; keep the value alive for the life of the process.
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

/// Without the feature there is nothing to set up.
#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    None
}

/// Evaluates fault point `name`; the `return` action kills this process at once.
#[cfg(feature = "failpoints")]
pub(crate) fn point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        // SIGKILL cannot be caught: this is the end of the process.
        let _ = orchestrate_base::process::kill(std::process::id(), libc::SIGKILL);
        loop {
            std::thread::park();
        }
    }
}
