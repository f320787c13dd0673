//! `eif-oracle FILE`: PCRs and CRC verdict of an EIF, computed by aws-nitro-enclaves-image-format.

use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;

fn main() {
    let path = std::env::args().nth(1).expect("usage: eif-oracle FILE");
    let mut reader = EifReader::from_eif(path).expect("the crate reads the EIF");
    let crc_ok = reader.check_crc();
    let pcrs = reader.get_measurements().expect("the crate measures the EIF");
    let mut out = serde_json::Map::new();
    for (k, v) in pcrs {
        out.insert(k, serde_json::Value::String(v));
    }
    out.insert("crc_ok".into(), serde_json::Value::Bool(crc_ok));
    println!("{}", serde_json::Value::Object(out));
}
