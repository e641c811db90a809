//! The one wall clock of persisted timestamps (milliseconds since the Unix epoch), with a hook
//! for unit tests of time-based logic: a test binary may install a source that follows tokio's
//! paused clock, so deadlines kept as timestamps pass in virtual time. The `ferric` binary never
//! installs one.

use std::sync::OnceLock;

static SOURCE: OnceLock<fn() -> u64> = OnceLock::new();

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    match SOURCE.get() {
        Some(source) => source(),
        None => system_ms(),
    }
}

/// The system's wall clock.
pub fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Installs the clock of this process (tests only); false if one was installed already.
pub fn install_test_source(source: fn() -> u64) -> bool {
    SOURCE.set(source).is_ok()
}
