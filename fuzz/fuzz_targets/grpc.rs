#![no_main]
use bpfman_api::{ext, v1};
use prost::Message;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Everything the daemon decodes from a caller must fail cleanly, never panic.
    let _ = v1::LoadRequest::decode(data);
    let _ = v1::AttachRequest::decode(data);
    let _ = v1::ListRequest::decode(data);
    let _ = v1::PullBytecodeRequest::decode(data);
    let _ = ext::PullImageRequest::decode(data);
    let _ = ext::RemoveImageRequest::decode(data);
    if let Ok(r) = v1::LoadRequest::decode(data) {
        // Re-encoding what decoded must round-trip.
        let again = v1::LoadRequest::decode(r.encode_to_vec().as_slice());
        assert!(again.is_ok());
    }
});
