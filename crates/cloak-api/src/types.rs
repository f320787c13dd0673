use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one error body of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`not_found`, `invalid_field`, `conflict`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// What failed and what to do; never a secret, never an internal detail of a 5xx.
    pub detail: String,
}

/// Roles of a user or API key (CCM's `AccessRoles`), ordered by power.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Reader,
    Writer,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "READER",
            Role::Writer => "WRITER",
            Role::Manager => "MANAGER",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_uppercase().as_str() {
            "READER" => Some(Role::Reader),
            "WRITER" => Some(Role::Writer),
            "MANAGER" => Some(Role::Manager),
            _ => None,
        }
    }
}

/// `POST /v1/sys/auth` answer (CCM's AuthResponse, plus `expires_in`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuthResponse {
    pub access_token: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
    pub session_info: SessionInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionInfo {
    pub subject_id: String,
    pub session_expires_at: i64,
    pub session_token_expires_at: i64,
    pub selected_account_id: String,
}

/// Paging information of a list answer (CCM's SearchMetadata).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchMetadata {
    pub page: i64,
    pub pages: i64,
    pub limit: i64,
    pub total_count: i64,
    pub filtered_count: i64,
}

/// A page of items.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ListResponse<T> {
    pub metadata: SearchMetadata,
    pub items: Vec<T>,
}

// ---- users and API keys ----

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct User {
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    pub roles: Vec<Role>,
    /// ACTIVE or DISABLED.
    pub status: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_logged_in_at: Option<i64>,
}

/// `POST /v1/users`: a user of the caller's account. The password is write-only.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub user_name: String,
    #[serde(default)]
    pub user_email: Option<String>,
    pub password: String,
    pub role: Role,
}

/// `PATCH /v1/users/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub password: Option<String>,
    /// Your current password: required to change your own.
    #[serde(default)]
    pub current_password: Option<String>,
    /// ACTIVE or DISABLED.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub user_email: Option<String>,
}

/// An API key for pipelines (cloak addition). The secret is shown once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKey {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    pub name: String,
    pub role: Role,
}

/// The answer to `POST /v1/api_keys`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Use as `Authorization: Bearer <secret>`. Stored only as a hash.
    pub secret: String,
}

// ---- apps ----

/// Who must approve a new build of an app (cloak addition: CCM has a single approver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Approvals needed.
    pub n: u32,
    /// User ids, or `role:WRITER` / `role:MANAGER`: who may approve.
    pub approvers: Vec<String>,
    /// The user who registered the build may not approve it.
    #[serde(default)]
    pub exclude_requester: bool,
}

impl Default for ApprovalPolicy {
    /// CCM's behaviour: one approval by any MANAGER or WRITER, the requester included.
    fn default() -> Self {
        ApprovalPolicy {
            n: 1,
            approvers: vec!["role:MANAGER".into(), "role:WRITER".into()],
            exclude_requester: false,
        }
    }
}

/// CCM's CertificateIssuancePolicy, plus what cloak checks at issuance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePolicy {
    #[serde(default)]
    pub require_known_image: Option<bool>,
    #[serde(default)]
    pub require_known_signer: Option<bool>,
    #[serde(default)]
    pub require_known_node: Option<bool>,
    /// Leaf validity in seconds (default 24 h).
    #[serde(default)]
    pub validity_seconds: Option<i64>,
    /// TCB statuses accepted (default UpToDate, SWHardeningNeeded).
    #[serde(default)]
    pub allowed_tcb_statuses: Option<Vec<String>>,
    /// Debug enclaves accepted for debug builds.
    #[serde(default)]
    pub allow_debug: Option<bool>,
    /// Evidence must bind a nonce from POST /v1/attestation/nonce (default true; false only
    /// for static evidence such as Gramine's legacy RA-TLS certificates).
    #[serde(default)]
    pub require_nonce: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct App {
    pub app_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub input_image_name: String,
    pub output_image_name: String,
    pub isvprodid: i64,
    pub isvsvn: i64,
    pub mem_size: i64,
    pub threads: i64,
    pub default_build_settings: serde_json::Value,
    pub allowed_domains: Vec<String>,
    pub advanced_settings: serde_json::Value,
    pub labels: BTreeMap<String, String>,
    pub certificate_policy: CertificatePolicy,
    pub approval_policy: ApprovalPolicy,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /v1/apps` (CCM's AppRequest plus `approval_policy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub input_image_name: String,
    pub output_image_name: String,
    #[serde(default)]
    pub isvprodid: Option<u16>,
    #[serde(default)]
    pub isvsvn: Option<u16>,
    #[serde(default)]
    pub mem_size: Option<u64>,
    #[serde(default)]
    pub threads: Option<u32>,
    #[serde(default)]
    pub default_build_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub advanced_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub certificate_policy: Option<CertificatePolicy>,
    #[serde(default)]
    pub approval_policy: Option<ApprovalPolicy>,
}

/// `PATCH /v1/apps/{id}`: every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_image_name: Option<String>,
    #[serde(default)]
    pub output_image_name: Option<String>,
    #[serde(default)]
    pub default_build_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub advanced_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub certificate_policy: Option<CertificatePolicy>,
    #[serde(default)]
    pub approval_policy: Option<ApprovalPolicy>,
}

// ---- builds ----

/// CCM's DockerInfo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerInfo {
    pub docker_image_name: String,
    pub docker_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image_sha: Option<String>,
    /// MiB (units of 2**20 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<Vec<serde_json::Value>>,
}

/// SGX measurements of a build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SgxAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrenclave: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrsigner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isvprodid: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isvsvn: Option<u16>,
}

/// Nitro Enclaves PCRs of a build (hex SHA-384, 96 digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NitroEnclaveAttributes {
    pub pcr0: String,
    pub pcr1: String,
    pub pcr2: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<String>,
}

/// CCM's ImageAttributes: exactly one of its members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgx: Option<SgxAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nitro_enclave: Option<NitroEnclaveAttributes>,
}

/// CCM's CreateBuildRequest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildRequest {
    pub docker_info: DockerInfo,
    #[serde(default)]
    pub mrenclave: Option<String>,
    #[serde(default)]
    pub mrsigner: Option<String>,
    #[serde(default)]
    pub isvprodid: Option<u16>,
    #[serde(default)]
    pub isvsvn: Option<u16>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub mem_size: Option<u64>,
    #[serde(default)]
    pub threads: Option<u32>,
    #[serde(default)]
    pub attributes: Option<ImageAttributes>,
    #[serde(default)]
    pub advanced_settings: Option<serde_json::Value>,
    #[serde(default)]
    pub debug: Option<bool>,
}

/// IBM Data Shield's flat whitelist request (seed 000).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlatBuildRequest {
    pub docker_image_name: String,
    pub docker_version: String,
    #[serde(default)]
    pub docker_image_sha: Option<String>,
    #[serde(default)]
    pub docker_image_size: Option<u64>,
    pub mrenclave: String,
    pub mrsigner: String,
    pub isvprodid: u16,
    pub isvsvn: u16,
    pub app_name: String,
}

/// Either body of `POST /v1/builds`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BuildRequest {
    Ccm(Box<CreateBuildRequest>),
    Flat(FlatBuildRequest),
}

/// PENDING, WHITELISTED or REJECTED, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BuildStatus {
    pub status: String,
    pub status_updated_at: i64,
}

/// CCM's Build object.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Build {
    pub build_id: String,
    pub docker_info: DockerInfo,
    pub created_at: i64,
    pub updated_at: i64,
    pub app_id: String,
    pub app_name: String,
    pub status: BuildStatus,
    pub attributes: ImageAttributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    pub advanced_settings: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_task_id: Option<String>,
    /// The task that decided (or is deciding) this build.
    pub task_id: String,
    pub debug: bool,
    /// Why the build was rejected or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Flat copies of the measurements, as IBM's API answers them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrenclave: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrsigner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isvprodid: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isvsvn: Option<u16>,
}

/// `PATCH /v1/builds/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildPatch {
    /// CCM's configs map (stored, shown back).
    #[serde(default)]
    pub configs: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub advanced_settings: Option<serde_json::Value>,
}

/// `POST /v1/builds/{id}/revoke` (cloak addition).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: String,
}

// ---- tasks ----

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RequesterInfo {
    /// USER, APP or SYSTEM.
    pub requester_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalInfo {
    pub user_id: String,
    pub user_name: String,
    /// APPROVED or DENIED.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial_reason: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskStatus {
    pub created_at: i64,
    pub status_updated_at: i64,
    /// INPROGRESS, SUCCESS, DENIED or FAILED.
    pub status: String,
}

/// CCM's Task, with the quorum it is decided by.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub task_id: String,
    pub requester_info: RequesterInfo,
    pub entity_id: String,
    /// BUILD_WHITELIST.
    pub task_type: String,
    pub status: TaskStatus,
    pub description: String,
    pub approvals: Vec<ApprovalInfo>,
    pub approval_policy: ApprovalPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial_reason: Option<String>,
}

/// `PATCH /v1/tasks/{id}` (CCM's TaskUpdateRequest).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdateRequest {
    /// APPROVED or DENIED.
    pub status: String,
    #[serde(default)]
    pub denial_reason: Option<String>,
}

/// CCM's TaskResult.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub task_id: String,
    pub task_type: String,
    pub task_status: TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

// ---- registry credentials ----

/// A saved registry credential; the password is never answered (`"*****"`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Registry {
    pub registry_id: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    pub username: String,
    pub credential: CredentialType,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
}

/// Masks the password.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"*****")
            .finish()
    }
}

/// CCM's CredentialType.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialType {
    pub default: AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryRequest {
    pub url: String,
    pub credential: CredentialType,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub credential: Option<CredentialType>,
    #[serde(default)]
    pub description: Option<String>,
}

// ---- audit ----

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix time in milliseconds.
    pub time: i64,
    pub account_id: String,
    /// user, api_key or system.
    pub actor_type: String,
    pub actor_id: String,
    pub actor_name: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of checking an account's audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerification {
    pub ok: bool,
    pub records: i64,
    /// The first record whose content, order or presence was altered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `GET /v1/sys/version`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Version {
    pub version: String,
    pub api_version: String,
}
