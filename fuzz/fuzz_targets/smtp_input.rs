//! What the relay's session feeds arbitrary client bytes through: the command receiver, and the
//! DATA and BDAT receivers. None may panic or loop on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, RequestReceiver};

fuzz_target!(|data: &[u8]| {
    // Commands, as a pipelining client would send them, split at an arbitrary point.
    let split = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let mut requests = RequestReceiver::default();
    for chunk in [&data[..split], &data[split..]] {
        let mut bytes = chunk.iter();
        let mut guard = 0;
        while bytes.len() > 0 && guard < 10_000 {
            guard += 1;
            let needs_more = matches!(
                requests.ingest(&mut bytes).map(|_| ()),
                Err(smtp_proto::Error::NeedsMoreData { .. })
            );
            if needs_more {
                break;
            }
        }
    }
    // A message body with dot-stuffing.
    let mut body = Vec::new();
    let mut data_rx = DataReceiver::new();
    let mut bytes = data.iter();
    let _ = data_rx.ingest(&mut bytes, &mut body);
    // A BDAT chunk of a size taken from the input.
    let mut bdat = BdatReceiver::new(data.len() / 2, false);
    let mut bytes = data.iter();
    let _ = bdat.ingest(&mut bytes, &mut body);
});
