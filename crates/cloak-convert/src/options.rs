//! Conversion options, in the shapes of the seed APIs: the EnclaveOS `/convert-image` body
//! (camelCase) for SGX and the CCM `converter_options` / `nitro_enclaves_options` (snake_case)
//! for Nitro. The CLI maps its flags onto the same structs, and `--options FILE` reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Certificate the launcher requests from the manager at start-up (seed `CertificateConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateConfig {
    /// `MANAGER_CA` (default), `NODE` or `SELF_IAS`.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Subject common name, typically a DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Key type; only `RSA`.
    #[serde(default = "default_key_type")]
    pub key_type: String,
    /// Key parameters (e.g. `{"size": 2048}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_param: Option<serde_json::Value>,
    /// Where the key appears in the application's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// Where the certificate appears in the application's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_path: Option<String>,
    /// Where the chain (issuing CA, root) appears; `none` (the default): not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_path: Option<String>,
}

/// The manager the converted image attests to at start-up (cloak's extension of both seed
/// shapes; `--manager-url`, `--manager-ca`, … on the command line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerOptions {
    /// `https://host:port` of the manager.
    pub url: String,
    /// The manager's CA (PEM): the certificates its TLS certificate chains to. Measured.
    pub ca: String,
    /// The app (id) the image's builds are registered under.
    pub app_id: String,
    /// Let the launcher use simulated evidence when no TEE is there (changes the measurement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_simulated_attestation: Option<bool>,
    /// Seconds an unreachable manager is retried (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_seconds: Option<u64>,
    /// Nitro: the vsock port (at CID 3) `cloak proxy` listens on for the manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_port: Option<u32>,
    /// Renew certificates this many seconds before they expire (default 0: when a third of
    /// their validity is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_seconds: Option<u64>,
}

fn default_issuer() -> String {
    "MANAGER_CA".into()
}
fn default_key_type() -> String {
    "RSA".into()
}

/// Seed `SigningKeyConfig`: `{"default": {}}` or a key cloak can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Sign with cloak's default key (generated once, kept in its config directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Sign with the key at this URI (`file:key.pem`, `pkcs11:…`); cloak's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Options of `POST /convert-image` (EnclaveOS), for the SGX target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SgxOptions {
    /// Enclave product id (`sgx.isvprodid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isvprodid: Option<u16>,
    /// Enclave security version (`sgx.isvsvn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isvsvn: Option<u16>,
    /// Enclave size with K/M/G suffix; a power of two (`sgx.enclave_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size: Option<String>,
    /// Enclave threads (`sgx.max_threads`), 1..=4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Debug enclave and verbose logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// Replace the image's Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replace the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_args: Option<Vec<String>>,
    /// Directories encrypted with keys provisioned at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_dirs: Option<Vec<String>>,
    /// Extra manifest keys (dotted TOML keys → values) merged into the generated manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_options: Option<BTreeMap<String, serde_json::Value>>,
    /// Certificates to request from the manager at start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<CertificateConfig>>,
    /// Signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyConfig>,
    /// The manager to attest to (cloak's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerOptions>,
    /// Put the manager's CA into the image's trust store too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_ccm_ca_certificates: Option<bool>,
    /// Template for core dump file paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_dump_pattern: Option<String>,
    /// Path of the runtime's log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_path: Option<String>,
    /// Java runtime mode (`OPENJDK`, …); recorded, tunes defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_mode: Option<String>,
    /// Integrity-protected (trusted) directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro_dirs: Option<Vec<String>>,
    /// Unprotected read-write files and directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rw_dirs: Option<Vec<String>>,
    /// Accept command-line arguments at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cmdline_args: Option<bool>,
    /// Fixed, measured environment (`NAME=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_env: Option<Vec<String>>,
    /// Environment defaults the operator may override at run time (`NAME=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutable_env: Option<Vec<String>>,
}

/// Seed `ConverterOptions` (CCM), for the Nitro target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConverterOptions {
    /// Add the manager's CA certificates into the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_ccm_ca_certificates: Option<bool>,
    /// Accept command-line arguments at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cmdline_args: Option<bool>,
    /// Debug mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// Replace the image's Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replace the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint_args: Option<Vec<String>>,
    /// Fixed, measured environment (`NAME=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<Vec<String>>,
    /// Environment defaults the operator may override (`NAME=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutable_env_vars: Option<Vec<String>>,
    /// Java runtime mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_mode: Option<String>,
    /// Certificates to request from the manager at start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<CertificateConfig>>,
    /// The manager to attest to (cloak's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerOptions>,
}

/// Seed `NitroEnclavesConversionRequestOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NitroEnclavesOptions {
    /// vCPUs of the enclave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<u32>,
    /// Enclave memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size: Option<u64>,
    /// Keep overlay file system changes across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_overlay_filesystem_persistence: Option<bool>,
    /// Sign the EIF (PCR8): `{"default": {}}` asks the manager for the app's key and
    /// certificate (cloak's extension; `cloak convert` takes --signing-key and --signing-cert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyConfig>,
}

/// The Nitro options file: both seed objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NitroOptions {
    /// Application options.
    #[serde(default)]
    pub converter_options: ConverterOptions,
    /// Enclave sizing.
    #[serde(default)]
    pub nitro_enclaves_options: NitroEnclavesOptions,
}

/// Split `NAME=value`, refusing entries without `=` or with an empty name.
pub fn split_env(entry: &str) -> Option<(&str, &str)> {
    entry.split_once('=').filter(|(k, _)| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sgx_body_parses() {
        let body = r#"{"isvprodid":7,"isvsvn":2,"memSize":"2048M","threads":8,"debug":false,
            "entrypoint":["/bin/app"],"entrypointArgs":["--serve"],"encryptedDirs":["/data"],
            "manifestOptions":{"sgx.file_check_policy":"strict"},
            "certificates":[{"issuer":"MANAGER_CA","subject":"app.example","keyPath":"/k","certPath":"/c"}],
            "signingKey":{"default":{}},"roDirs":["/"],"rwDirs":["/etc/hosts"],
            "allowCmdlineArgs":false,"manifestEnv":["A=1"],"mutableEnv":["B=2"]}"#;
        let o: SgxOptions = serde_json::from_str(body).unwrap();
        assert_eq!(o.mem_size.as_deref(), Some("2048M"));
        assert_eq!(o.certificates.unwrap()[0].key_type, "RSA");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<SgxOptions>(r#"{"memsize":"1G"}"#).unwrap_err();
        assert!(err.to_string().contains("memsize"), "{err}");
    }

    #[test]
    fn seed_nitro_body_parses() {
        let body = r#"{"converter_options":{"allow_cmdline_args":true,"env_vars":["A=1"],"mutable_env_vars":["B=2"]},
            "nitro_enclaves_options":{"cpu_count":2,"mem_size":2048,"enable_overlay_filesystem_persistence":false}}"#;
        let o: NitroOptions = serde_json::from_str(body).unwrap();
        assert_eq!(o.nitro_enclaves_options.mem_size, Some(2048));
        assert_eq!(o.converter_options.allow_cmdline_args, Some(true));
    }

    #[rstest::rstest]
    #[case("A=1", Some(("A", "1")))]
    #[case("A=", Some(("A", "")))]
    #[case("A=b=c", Some(("A", "b=c")))]
    #[case("=x", None)]
    #[case("novalue", None)]
    fn env_entries(#[case] input: &str, #[case] expected: Option<(&str, &str)>) {
        assert_eq!(split_env(input), expected);
    }
}
