//! Both directions interleaved, as a pipelining client and its server
//! would: the first byte of each chunk picks the direction and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qproxy::events::EventSink;
use qproxy::session::relay::{inspect_all, Backend, Frontend};
use qproxy::tracker::{SessionInfo, Tracker, TrackerLimits};

fuzz_target!(|data: &[u8]| {
    let (sink, _rx) = EventSink::channel(64);
    let mut t = Tracker::new(SessionInfo::default(), sink, TrackerLimits::default(), false);
    let _ = t.backend(b"Z\0\0\0\x05I");
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x7f).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        let _ = if control & 0x80 == 0 {
            inspect_all::<Frontend>(chunk, &mut t, 1 << 16)
        } else {
            inspect_all::<Backend>(chunk, &mut t, 1 << 16)
        };
        rest = next;
    }
    t.close();
});
