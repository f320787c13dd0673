//! Conversion jobs (cloak's addition): the seeds' conversion endpoints queue a durable job that a
//! worker runs; `Prefer: respond-async` answers the job at once, otherwise the call waits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JobTarget {
    /// An SGX (Gramine) image: `/convert-image`, `/v1/tools/converter/convert-app`.
    #[serde(rename = "SGX")]
    Sgx,
    /// A Nitro Enclaves image: `/v1/builds/convert-app/nitro-enclaves`.
    #[serde(rename = "NITRO")]
    Nitro,
}

impl JobTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            JobTarget::Sgx => "SGX",
            JobTarget::Nitro => "NITRO",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored or queried name.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "QUEUED" => JobState::Queued,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" => JobState::Succeeded,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job has ended (it changes no more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Why a job failed: the stage and the pipeline's message (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobError {
    /// `resolve`, `flatten`, `amend`, `measure`, `package`, `push` (or `queue` when the job
    /// never ran to a stage: lease expired too often).
    pub stage: String,
    pub message: String,
}

/// A conversion job (`GET /v1/jobs/{job_id}`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub job_id: String,
    pub app_id: Option<String>,
    pub target: JobTarget,
    pub state: JobState,
    /// The stage running now (or where it stopped): resolve, flatten, amend, measure, package, push.
    pub stage: Option<String>,
    /// Bytes of blobs transferred so far in this attempt.
    pub bytes_done: i64,
    /// Bytes of the blobs announced so far, when known.
    pub bytes_total: Option<i64>,
    /// Attempts started (a worker that died leaves its attempt counted).
    pub attempts: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<JobError>,
    /// The build registered from the result.
    pub build_id: Option<String>,
    /// The endpoint's response (the seed's shape) once SUCCEEDED.
    pub result: Option<serde_json::Value>,
    pub input_image: String,
    pub output_image: String,
}

/// One attempt of a job (cloak's addition: `GET /v1/jobs/{job_id}/attempts`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobAttempt {
    pub attempt: i64,
    /// The worker that claimed it.
    pub worker: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// SUCCEEDED, FAILED, RETRY, CANCELLED, LEASE_EXPIRED or null while it runs.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// Docker registry credentials of a conversion request (the seeds' AuthConfig). The password is
/// answered as `*****` wherever a request is shown.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConvertAuthConfig {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Masks the password, so that a request, a job submission or a claim holding these
/// credentials can be logged with `{:?}`.
impl std::fmt::Debug for ConvertAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertAuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "*****"))
            .finish()
    }
}

/// EnclaveOS `POST /convert-image` (and IBM's `convert-app`): the images, their credentials, and
/// every option `cloak convert --target sgx` takes (memSize, threads, signingKey, certificates…).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConvertImageRequest {
    pub input_image_name: String,
    pub output_image_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_auth_config: Option<ConvertAuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_auth_config: Option<ConvertAuthConfig>,
    /// Both images' credentials, when input and output share a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_config: Option<ConvertAuthConfig>,
    /// cloak's addition: the app the resulting build is registered under (else the app whose
    /// output image name matches, created when missing and the caller is a MANAGER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The conversion options (the EnclaveOS body's other members).
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// The EnclaveOS `/convert-image` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConvertImageResponse {
    pub new_image: String,
    #[serde(rename = "imageSHA")]
    pub image_sha: String,
    pub image_size: u64,
    pub isvprodid: u16,
    pub isvsvn: u16,
    pub mrenclave: String,
    pub mrenclave2: String,
    pub mrsigner: String,
}

/// CCM's ConversionRequestImageInfo.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ConversionImage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_config: Option<ConvertAuthConfig>,
}

/// CCM's ImageConversionRequest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ImageConversionRequest {
    pub app_id: String,
    pub input_image: ConversionImage,
    pub output_image: ConversionImage,
    /// CCM's ConverterOptions.
    #[serde(default)]
    pub converter_options: serde_json::Value,
}

/// CCM's NitroEnclavesConversionRequest: `{request, nitro_enclaves_options}` (the request's
/// members may also be given at the top level).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NitroConversionRequest {
    pub request: ImageConversionRequest,
    /// CCM's NitroEnclavesConversionRequestOptions.
    #[serde(default)]
    pub nitro_enclaves_options: serde_json::Value,
}
