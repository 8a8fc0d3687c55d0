//! Both directions interleaved, as a pipelining client and its server
//! would: the first byte of each chunk picks the direction and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qproxy::tracker::{inspect_all, Backend, Frontend, Now, SessionInfo, Tracker, TrackerLimits};

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
    let mut t = Tracker::new(SessionInfo::default(), TrackerLimits::default(), false, now);
    let _ = t.backend(b"Z\0\0\0\x05I", now);
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x7f).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        let _ = if control & 0x80 == 0 {
            inspect_all::<Frontend>(chunk, &mut t, 1 << 16, now)
        } else {
            inspect_all::<Backend>(chunk, &mut t, 1 << 16, now)
        };
        rest = next;
    }
    t.close(now);
    // Effects are the caller's to act on; here they are dropped.
    t.drain_effects().for_each(drop);
});
