//! `eif-oracle FILE`: PCRs, CRC verdict and (for signed EIFs) signature verdict of an EIF,
//! computed by aws-nitro-enclaves-image-format.

use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::PcrSignatureChecker;

fn main() {
    let path = std::env::args().nth(1).expect("usage: eif-oracle FILE");
    let mut reader = EifReader::from_eif(path.clone()).expect("the crate reads the EIF");
    let crc_ok = reader.check_crc();
    let pcrs = reader.get_measurements().expect("the crate measures the EIF");
    let mut out = serde_json::Map::new();
    for (k, v) in pcrs {
        out.insert(k, serde_json::Value::String(v));
    }
    out.insert("crc_ok".into(), serde_json::Value::Bool(crc_ok));
    let mut checker = PcrSignatureChecker::from_eif(&path).expect("the crate reads the signature section");
    if !checker.is_empty() {
        let verdict = checker.verify();
        out.insert("signature_ok".into(), serde_json::Value::Bool(verdict.is_ok()));
        if let Err(e) = verdict {
            out.insert("signature_error".into(), serde_json::Value::String(e));
        }
    }
    println!("{}", serde_json::Value::Object(out));
}
