//! Step 04's messages as they are seen on the underlay, for the capture
//! decoder (`tunlab decode`): see [`step02_plain_tunnel::underlay`].

use step02_plain_tunnel::underlay::Decoder;

use crate::wire::MessageSummary;

/// Step 04's decoder. It claims a payload whose three bytes after the type
/// are zero, as every message of step 04 has them (step 02's messages have
/// their type there); a message it claims but cannot parse is shown with
/// what is wrong with it. Step 05 and step 06's layer 3 send the same
/// messages.
pub const DECODER: Decoder = Decoder {
    step: "04",
    claims: reserved_bytes_zero,
    message: message_line,
};

fn reserved_bytes_zero(payload: &[u8]) -> bool {
    payload.get(1..4) == Some(&[0, 0, 0])
}

fn message_line(payload: &[u8]) -> String {
    MessageSummary(payload).to_string()
}
