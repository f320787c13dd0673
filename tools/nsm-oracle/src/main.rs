//! The NSM's messages as aws-nitro-enclaves-nsm-api encodes them (serde_cbor), in hex. The
//! arguments after the first come as arguments or, when there are none, one per line on
//! stdin (a 64 KiB byte string is longer in hex than one argument may be):
//!
//! - `nsm-oracle request USER_DATA NONCE PUBLIC_KEY`: `Request::Attestation`, each argument
//!   hex or `-` for None;
//! - `nsm-oracle attestation-response DOCUMENT`: `Response::Attestation { document }`;
//! - `nsm-oracle error-response`: `Response::Error(ErrorCode::InvalidArgument)`.

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use serde_bytes::ByteBuf;

fn bytes(arg: &str) -> Option<ByteBuf> {
    (arg != "-").then(|| ByteBuf::from(hex::decode(arg).expect("arguments are hex or -")))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 1 {
        args.extend(std::io::stdin().lines().map(|l| l.expect("stdin is text")));
    }
    let encoded = match args.first().map(String::as_str) {
        Some("request") if args.len() == 4 => serde_cbor::to_vec(&Request::Attestation {
            user_data: bytes(&args[1]),
            nonce: bytes(&args[2]),
            public_key: bytes(&args[3]),
        }),
        Some("attestation-response") if args.len() == 2 => {
            serde_cbor::to_vec(&Response::Attestation {
                document: hex::decode(&args[1]).expect("the document is hex"),
            })
        }
        Some("error-response") => {
            serde_cbor::to_vec(&Response::Error(ErrorCode::InvalidArgument))
        }
        _ => {
            eprintln!("usage: nsm-oracle request USER_DATA NONCE PUBLIC_KEY | attestation-response DOCUMENT | error-response");
            std::process::exit(2);
        }
    }
    .expect("serde_cbor encodes the message");
    println!("{}", hex::encode(encoded));
}
