//! `cloak`: turn container images into confidential-computing images.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 bad usage
//! (including a missing secret or flags that do not fit together).

mod logging;
#[macro_use]
mod output;
mod commands;
mod progress;
mod registry_args;

use clap::{Parser, Subcommand};

/// Turn ordinary container images into confidential-computing images, daemonless.
#[derive(Debug, Parser)]
#[command(name = "cloak", version, about, propagate_version = true)]
struct Cli {
    /// Log verbosity (error, warn, info, debug, trace; default warn, info for the manager);
    /// RUST_LOG overrides it.
    #[arg(long, global = true, env = "CLOAK_LOG")]
    log: Option<String>,
    /// Log format: text, or json (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        default_value = "text",
        env = "CLOAK_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show an image's manifest, config and layers.
    Inspect(commands::inspect::Args),
    /// Copy an image between registries, OCI layouts and docker archives (like `skopeo copy`).
    Copy(commands::copy::Args),
    /// Build an image from files alone, reproducibly (no base image, no Docker).
    Assemble(commands::assemble::Args),
    /// List the flattened file system of an image, with the sha256 of each regular file.
    LsFiles(commands::ls_files::Args),
    /// Convert an image into a confidential-computing image (SGX with Gramine, or Nitro).
    Convert(Box<commands::convert::Args>),
    /// Recompute a converted image's measurements and check them against its SIGSTRUCTs.
    Measure(commands::measure::Args),
    /// Low-level SGX tools: measure, sign, view SIGSTRUCTs.
    Sgx(commands::sgx::Args),
    /// Low-level EIF tools: build an EIF from its parts.
    Eif(commands::eif::Args),
    /// Show an EIF's sections, PCRs and CRC check (like nitro-cli describe-eif).
    DescribeEif(commands::eif::DescribeArgs),
    /// Encrypt an image's layers for recipients (ocicrypt: JWE, PKCS7, keyprovider), or change
    /// the recipients of an encrypted image without re-encrypting it.
    Encrypt(commands::encrypt::Args),
    /// Decrypt an ocicrypt-encrypted image, verifying HMACs, digests and diff_ids.
    Decrypt(commands::decrypt::Args),
    /// Boot a Nitro image or EIF under qemu and exit with the application's status.
    Run(commands::run::Args),
    /// On a Nitro parent: forward the enclave's vsock port to the manager, and nowhere else.
    Proxy(commands::proxy::Args),
    /// Run and administer the manager service (apps, builds, approvals, audit).
    Manager(commands::manager::Args),
    /// Verify TEE evidence (SGX/TDX quotes, Nitro documents, RA-TLS certificates).
    Attest(commands::attest::Args),
    /// Log in to a manager; the session token is kept in $XDG_CONFIG_HOME/cloak/login.json (0600).
    Login(commands::client::LoginArgs),
    /// End the stored session and remove the login file.
    Logout(commands::client::LogoutArgs),
    /// Apps in the manager: list, show, create, update, delete.
    App(commands::app::Args),
    /// Builds in the manager: register measurements, list, show, revoke, delete.
    Build(commands::build::Args),
    /// Approval tasks: list, show, approve, deny.
    Task(commands::task::Args),
    /// Conversions run by a manager: submit, follow (with progress), show, list, cancel.
    Job(commands::job::Args),
    /// Registry credentials saved in the manager: list, add, update, delete.
    Registry(commands::registry_cred::Args),
    /// Users of the manager account: list, create, passwd, update.
    User(commands::user::Args),
    /// API keys for pipelines: list, create, revoke.
    Apikey(commands::user::KeyArgs),
    /// The manager's audit log: list, verify, export.
    Audit(commands::audit::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Manager(_) => "info",
        _ => "warn",
    };
    // The manager's lines go through a writer thread: a request never waits on stderr.
    let background = matches!(cli.command, Command::Manager(_));
    init_tracing(
        cli.log.as_deref().unwrap_or(default_level),
        cli.log_format,
        background,
    );
    let result = match cli.command {
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Copy(args) => commands::copy::run(args),
        Command::Assemble(args) => commands::assemble::run(args),
        Command::LsFiles(args) => commands::ls_files::run(args),
        Command::Convert(args) => commands::convert::run(*args),
        Command::Measure(args) => commands::measure::run(args),
        Command::Sgx(args) => commands::sgx::run(args),
        Command::Eif(args) => commands::eif::run(args),
        Command::DescribeEif(args) => commands::eif::describe(args),
        Command::Run(args) => commands::run::run(args),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Encrypt(args) => commands::encrypt::run(args),
        Command::Decrypt(args) => commands::decrypt::run(args),
        Command::Manager(args) => commands::manager::run(args),
        Command::Attest(args) => commands::attest::run(args),
        Command::Login(args) => commands::client::login(args),
        Command::Logout(args) => commands::client::logout(args),
        Command::App(args) => commands::app::run(args),
        Command::Build(args) => commands::build::run(args),
        Command::Task(args) => commands::task::run(args),
        Command::Job(args) => commands::job::run(args),
        Command::Registry(args) => commands::registry_cred::run(args),
        Command::User(args) => commands::user::run(args),
        Command::Apikey(args) => commands::user::run_keys(args),
        Command::Audit(args) => commands::audit::run(args),
    };
    logging::flush();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cloak: error: {}", chain(&err));
            if err.is::<commands::client::UsageError>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already carries (many error types print their source themselves).
fn chain(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(level: &str, format: LogFormat, background: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let writer = match background.then(logging::background) {
        Some(Ok(w)) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
        // No thread to be had: the lines go to stderr directly, as for every other command.
        _ => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
