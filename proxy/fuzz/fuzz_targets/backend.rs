//! Server → client bytes through framing and the tracker: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qproxy::tracker::{inspect_all, Backend, Now, SessionInfo, Tracker, TrackerLimits};

/// One instant for the whole run.
static START: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

fuzz_target!(|data: &[u8]| {
    // A fixed clock: the tracker reads none, and a fuzz run must not
    // depend on one.
    let now = Now {
        instant: *START,
        wall: std::time::UNIX_EPOCH,
    };
    let mut t = Tracker::new(SessionInfo::default(), TrackerLimits::default(), true, now);
    let _ = inspect_all::<Backend>(data, &mut t, 1 << 20, now);
    t.close(now);
    // Effects are the caller's to act on; here they are dropped.
    t.drain_effects().for_each(drop);
});
