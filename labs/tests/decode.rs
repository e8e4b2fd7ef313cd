//! `tunlab decode` over the shipped captures of the underlay: each step's
//! messages decoded by that step's decoder, chosen with `--step` or found
//! by trying each in turn.

use std::path::Path;

use tunlab::decode::{decode, decoders};

fn decoded(file: &Path, step: Option<&str>) -> String {
    let mut out = Vec::new();
    decode(file, &decoders(step).unwrap(), 51820, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn pcap(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps").join(name)
}

/// Every capture of an underlay, decoded without `--step`. The heading
/// names the file as `pcaps/STEP/NAME`, so the snapshot does not depend on
/// where the checkout is.
#[test]
fn underlay_captures() {
    insta::glob!(
        "../../pcaps",
        "*/{*underlay,internet,control,l3-outside}.pcap",
        |path| {
            let text = decoded(path, None);
            let step = path.parent().and_then(Path::file_name).unwrap().to_string_lossy();
            let name = path.file_name().unwrap().to_string_lossy();
            let shown = text.replacen(&path.display().to_string(), &format!("pcaps/{step}/{name}"), 1);
            insta::assert_snapshot!(shown);
        }
    );
}

/// `--step` picks the step's own decoder: the same lines as trying each,
/// for the step that made the capture; the other step's format shows
/// every message as bad.
#[test]
fn the_step_chooses_the_decoder() {
    let step02 = pcap("step02/underlay.pcap");
    let step04 = pcap("step04/underlay.pcap");
    assert_eq!(decoded(&step02, Some("02")), decoded(&step02, None));
    assert_eq!(decoded(&step02, Some("03")), decoded(&step02, None));
    assert_eq!(decoded(&step04, Some("04")), decoded(&step04, None));
    assert_eq!(decoded(&step04, Some("step05")), decoded(&step04, None));
    let wrong = decoded(&step04, Some("02"));
    assert!(
        wrong.contains("| [bad tunnel message, 132 bytes: unknown message type]"),
        "{wrong}"
    );
    assert!(decoded(&step04, None).contains("| handshake initiation, sender 0x"));
    // Step 04's decoder claims none of step 02's messages.
    assert!(!decoded(&step02, Some("04")).contains(" | "));
    let err = decoders(Some("01")).unwrap_err().to_string();
    assert_eq!(
        err,
        "step 01 sends no tunnel messages over UDP; --step takes one of 02, 03, 04, 05, 06, 07"
    );
}

/// WireGuard's captures: `--step 07` and trying each decoder in turn give
/// the same lines; step 04's format, which WireGuard's handshake messages
/// outgrew by mac2, shows them as malformed; and WireGuard's decoder shows
/// step 04's handshake as malformed in turn, but its data messages, the
/// same in both, as they are.
#[test]
fn wireguard_and_step_04_are_told_apart() {
    let step04 = pcap("step04/underlay.pcap");
    for peer in ["wireguard-go", "boringtun"] {
        let file = pcap(&format!("step07/{peer}-underlay.pcap"));
        let text = decoded(&file, Some("07"));
        assert_eq!(text, decoded(&file, None), "{peer}");
        assert!(
            text.contains("UDP, length 148 | handshake initiation, sender 0x"),
            "{text}"
        );
        assert!(
            text.contains("UDP, length 92 | handshake response, sender 0x"),
            "{text}"
        );
        let as_04 = decoded(&file, Some("04"));
        assert!(
            as_04.contains("UDP, length 148 | [bad message, 148 bytes: wrong length for its type]"),
            "{as_04}"
        );
    }
    let as_07 = decoded(&step04, Some("07"));
    assert!(
        as_07.contains("UDP, length 132 | malformed (truncated), 132 bytes"),
        "{as_07}"
    );
    assert!(as_07.contains("| data, receiver 0x"), "{as_07}");
}
