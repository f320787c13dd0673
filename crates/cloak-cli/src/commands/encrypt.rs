//! `cloak encrypt SRC DST --recipient jwe:pub.pem`: ocicrypt layer encryption, and
//! `--add-recipient`/`--remove-recipient` to change who can decrypt without re-encrypting.

use std::process::ExitCode;

use anyhow::Context;
use cloak_convert::encrypt::{encrypt, EncryptRequest};

use super::decrypt::{KeyArgs, PairArgs};
use crate::output::{print_json, Format};
use crate::registry_args::runtime;

/// Arguments of `cloak encrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pair: PairArgs,
    /// Who can decrypt: jwe:PUBLIC-KEY (RSA or EC, PEM/DER/JWK/certificate), pkcs7:CERT
    /// (RSA X.509) or provider:NAME[:PARAMS] (a configured keyprovider). Repeatable.
    #[arg(long, value_name = "SCHEME:FILE")]
    pub recipient: Vec<String>,
    /// Encrypt only this layer (0 = base, -1 = top); repeatable. Default: every layer.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub layer: Vec<i64>,
    /// Give an already encrypted image another recipient (needs --key of a current one).
    #[arg(long, value_name = "SCHEME:FILE")]
    pub add_recipient: Vec<String>,
    /// Take a recipient away from an encrypted image (layer keys are not changed: anyone who
    /// already had them keeps them).
    #[arg(long, value_name = "SCHEME:FILE")]
    pub remove_recipient: Vec<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Run `cloak encrypt`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let transfer = args.pair.transfer(args.keys.jobs)?;
    let (input, output) = (transfer.input.clone(), transfer.output.clone());
    let req = EncryptRequest {
        transfer,
        recipients: args.recipient.clone(),
        layers: args.layer.clone(),
        add: args.add_recipient.clone(),
        remove: args.remove_recipient.clone(),
        keys: args.keys.material(),
    };
    let report = runtime()?
        .block_on(encrypt(req))
        .with_context(|| format!("while encrypting {input} into {output}"))?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    match args.pair.output {
        Format::Json => print_json(&report)?,
        Format::Text => {
            for (i, l) in report.layers.iter().enumerate() {
                if l.encrypted {
                    outln!("layer {i}: {} encrypted for {}", l.digest, l.recipients);
                } else {
                    outln!("layer {i}: {} (plain)", l.digest);
                }
            }
            outln!("Wrote {} ({})", report.destination, report.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}
