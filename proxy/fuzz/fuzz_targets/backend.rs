//! Server → client bytes through framing and the tracker: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qproxy::events::EventSink;
use qproxy::session::relay::{inspect_all, Backend};
use qproxy::tracker::{SessionInfo, Tracker, TrackerLimits};

fuzz_target!(|data: &[u8]| {
    let (sink, _rx) = EventSink::channel(64);
    let mut t = Tracker::new(SessionInfo::default(), sink, TrackerLimits::default(), true);
    let _ = inspect_all::<Backend>(data, &mut t, 1 << 20);
    t.close();
});
