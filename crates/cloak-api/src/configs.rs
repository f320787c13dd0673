//! App configs and secrets (CCM's `/v1/app_configs` and `/v1/runtime/app_configs`). Values are
//! write-only for operators: responses name the entries, never their contents; only an
//! attested build's launcher gets contents, at the runtime endpoint over mutual TLS.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entry's value (CCM's ApplicationConfigContents). Entry names say where it goes:
/// `/absolute/path` (a file, mode 0600, owned by the app's user), `env:NAME` (an environment
/// variable), `sgx-key:NAME` (32 hex digits: the key of the Gramine encrypted mount NAME).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppConfigContents {
    /// The value (absent in operator responses: values are write-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
}

/// `POST /v1/app_configs` (CCM's ApplicationConfig, plus what it is attached to).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppConfigRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Entry name → value.
    pub app_config: BTreeMap<String, AppConfigContents>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<String>,
    /// cloak: the app whose whitelisted builds get this config (or give `build_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// cloak: only this build gets it (its entries override the app's of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

/// `PATCH /v1/app_configs/{config_id}` (CCM's UpdateApplicationConfigRequest; cloak adds
/// `app_config`, which replaces every entry, and `labels`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppConfigPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_config: Option<BTreeMap<String, AppConfigContents>>,
}

/// An app config as operators see it (CCM's ApplicationConfigResponse; contents omitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppConfig {
    pub config_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: String,
    pub description: String,
    /// Entry names; their contents are never returned here.
    pub app_config: BTreeMap<String, AppConfigContents>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub app_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

/// `GET /v1/app_configs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AppConfigList {
    pub items: Vec<AppConfig>,
}

/// CCM's HashedConfig: the merged entries released to one build.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeConfig {
    pub app_config: BTreeMap<String, AppConfigContents>,
    pub labels: BTreeMap<String, String>,
    /// The manager CA's chain (PEM certificates).
    pub zone_ca: Vec<String>,
}

/// `GET /v1/runtime/app_configs` (CCM's RuntimeAppConfig).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeAppConfig {
    pub config: RuntimeConfig,
    pub extra: serde_json::Value,
}
