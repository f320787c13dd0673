//! `cloak attest verify FILE`: verify one piece of TEE evidence and print its claims.
//! Exit code 1 when it does not verify (the message gives the reason and its code).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use cloak_attest::{time, At, Claims, Collateral, EvidenceKind, Input, Measurements, Policy};
use serde_json::{json, Value};

use crate::output::{print_json, Format};

/// Arguments of `cloak attest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Verify one piece of evidence (an SGX/TDX DCAP quote raw or hex, a Nitro attestation
    /// document raw or base64, a Gramine RA-TLS certificate in PEM, or simulated evidence) and
    /// print its claims.
    Verify(VerifyArgs),
}

/// Arguments of `cloak attest verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The evidence file; its kind is detected from its bytes.
    file: PathBuf,
    /// DCAP collateral (QuoteCollateralV3 JSON) for quotes and RA-TLS certificates.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Verification time, RFC 3339 (2025-07-01T00:00:00Z) or Unix seconds. Default: a Nitro or
    /// simulated document's own timestamp; the current time for quotes and certificates.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Accept debug enclaves and debug-mode Nitro documents (development only).
    #[arg(long)]
    allow_debug: bool,
    /// Fail unless the TCB status is one of these (comma-separated, e.g. UpToDate,SWHardeningNeeded);
    /// without it the status is reported, not judged (Revoked always fails).
    #[arg(long, value_name = "STATUS,...", value_delimiter = ',')]
    accept_tcb: Option<Vec<String>>,
    /// Maximum age, in seconds, of a Nitro or simulated document at the verification time.
    #[arg(long, value_name = "SECONDS", default_value_t = cloak_attest::DEFAULT_MAX_AGE_SECS)]
    max_age: u64,
    /// Accept simulated evidence (no TEE) signed by the key in --simulation-key.
    #[arg(long, requires = "simulation_key")]
    allow_simulated: bool,
    /// The simulation public key (P-256, PEM or DER) simulated evidence must be signed with.
    #[arg(long, value_name = "FILE")]
    simulation_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// Run `cloak attest`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Verify(a) => verify(a),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("while reading {file}"))?;
    let evidence = cloak_attest::detect(&bytes).with_context(|| file.clone())?;
    let collateral = match &args.collateral {
        Some(p) => {
            let text =
                std::fs::read(p).with_context(|| format!("while reading {}", p.display()))?;
            Some(Collateral::from_json(&text).with_context(|| p.display().to_string())?)
        }
        None => None,
    };
    let simulation_key = match &args.simulation_key {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("while reading {}", p.display()))?;
            Some(
                cloak_attest::SimulationPublicKey::from_bytes(&b)
                    .with_context(|| p.display().to_string())?,
            )
        }
        None => None,
    };
    let at = match (&args.at, evidence.kind) {
        (Some(t), _) => At::Time(time::parse(t).with_context(|| {
            format!("--at {t:?} is neither RFC 3339 (2025-07-01T00:00:00Z) nor Unix seconds")
        })?),
        (None, EvidenceKind::NitroDocument | EvidenceKind::Simulated) => At::EvidenceTimestamp,
        (None, _) => At::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the system clock is before 1970")?
                .as_secs(),
        ),
    };
    let policy = Policy {
        allow_debug: args.allow_debug,
        accepted_tcb_statuses: args.accept_tcb,
        allow_simulated: args.allow_simulated,
        max_age_secs: args.max_age,
    };
    let input = Input {
        at,
        collateral: collateral.as_ref(),
        policy: &policy,
        simulation_key: simulation_key.as_ref(),
    };
    let claims = match cloak_attest::verifier(evidence.kind).verify(&evidence.bytes, &input) {
        Ok(c) => c,
        Err(e) => bail!(
            "{file}: {} does not verify: {e} [reason: {}]",
            evidence.kind,
            e.code()
        ),
    };
    match args.output {
        Format::Json => print_json(&to_json(&claims))?,
        Format::Text => print_text(&file, &claims),
    }
    Ok(ExitCode::SUCCESS)
}

/// The claims with exactly the documented keys; absent values are null.
fn to_json(c: &Claims) -> Value {
    let hex_of = |b: &Option<Vec<u8>>| b.as_ref().map(hex::encode);
    let sgx = match &c.measurements {
        Measurements::Sgx(m) => Some(m),
        _ => None,
    };
    let pcrs = match &c.measurements {
        Measurements::Pcrs(p) => Some(
            p.iter()
                .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
                .collect::<serde_json::Map<_, _>>(),
        ),
        _ => None,
    };
    json!({
        "tee": c.tee.as_str(),
        "mrenclave": sgx.map(|m| hex::encode(m.mrenclave)),
        "mrsigner": sgx.map(|m| hex::encode(m.mrsigner)),
        "isvprodid": sgx.map(|m| m.isvprodid),
        "isvsvn": sgx.map(|m| m.isvsvn),
        "debug": c.debug,
        "tcb_status": c.tcb.as_ref().map(|t| t.status.clone()),
        "advisory_ids": c.tcb.as_ref().map(|t| t.advisory_ids.clone()).unwrap_or_default(),
        "report_data": hex_of(&c.report_data),
        "pcrs": pcrs,
        "user_data": hex_of(&c.user_data),
        "nonce": hex_of(&c.nonce),
        "public_key": hex_of(&c.public_key),
        "timestamp": c.times.evidence_timestamp_ms,
    })
}

fn print_text(file: &str, c: &Claims) {
    outln!(
        "{file}: {} verified at {}",
        c.kind,
        time::rfc3339(c.times.checked_at)
    );
    if c.simulated {
        outln!("SIMULATED: no TEE; signed by the simulation key");
    }
    outln!("tee: {}", c.tee);
    match &c.measurements {
        Measurements::Sgx(m) => {
            outln!("mrenclave: {}", hex::encode(m.mrenclave));
            outln!("mrsigner: {}", hex::encode(m.mrsigner));
            outln!("isvprodid: {}  isvsvn: {}", m.isvprodid, m.isvsvn);
        }
        Measurements::Tdx(m) => {
            outln!("mr_td: {}", hex::encode(m.mr_td));
            for (i, r) in m.rtmrs.iter().enumerate() {
                outln!("rtmr{i}: {}", hex::encode(r));
            }
        }
        Measurements::Pcrs(p) => {
            for (i, v) in p {
                outln!("pcr{i}: {}", hex::encode(v));
            }
        }
    }
    outln!("debug: {}", c.debug);
    if let Some(t) = &c.tcb {
        let adv = if t.advisory_ids.is_empty() {
            "none".to_string()
        } else {
            t.advisory_ids.join(", ")
        };
        outln!("tcb_status: {} (advisories: {adv})", t.status);
    }
    for (name, v) in [
        ("report_data", &c.report_data),
        ("user_data", &c.user_data),
        ("nonce", &c.nonce),
        ("public_key", &c.public_key),
    ] {
        if let Some(v) = v {
            outln!("{name}: {}", hex::encode(v));
        }
    }
    if let Some(ms) = c.times.evidence_timestamp_ms {
        outln!("timestamp: {ms} ({})", time::rfc3339(ms / 1000));
    }
    outln!(
        "valid from {} until {} ({})",
        time::rfc3339(c.times.valid_from),
        time::rfc3339(c.times.valid_until),
        c.times.valid_until_item
    );
}
