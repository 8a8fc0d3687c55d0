//! Client → server bytes through framing and the tracker: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qproxy::events::EventSink;
use qproxy::session::relay::{inspect_all, Frontend};
use qproxy::tracker::{SessionInfo, Tracker, TrackerLimits};

fuzz_target!(|data: &[u8]| {
    let (sink, _rx) = EventSink::channel(64);
    let mut t = Tracker::new(SessionInfo::default(), sink, TrackerLimits::default(), false);
    // Past authentication, so every frontend decoder runs.
    let _ = t.backend(b"Z\0\0\0\x05I");
    let _ = inspect_all::<Frontend>(data, &mut t, 1 << 20);
    t.close();
});
