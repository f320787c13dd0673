//! Builds: converted images with their measurements. Registering one opens its BUILD_WHITELIST
//! task (under the app's quorum) in the same transaction; the task decides its status.

use serde_json::{json, Value};
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::{apps, tasks, validate, State};
use cloak_api::{
    AppRequest, Build, BuildPatch, BuildRequest, BuildStatus, CreateBuildRequest, DockerInfo,
    FlatBuildRequest, ImageAttributes, NitroEnclaveAttributes, SgxAttributes,
};

/// A validated registration, whichever body it came in.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub app_id: Option<String>,
    pub app_name: Option<String>,
    /// Create the app when it does not exist (IBM's flat body names apps by name only).
    pub create_app: bool,
    pub docker: DockerInfo,
    pub sgx: Option<SgxAttributes>,
    pub nitro: Option<NitroEnclaveAttributes>,
    pub mem_size: Option<u64>,
    pub threads: Option<u32>,
    pub advanced_settings: Value,
    pub debug: bool,
}

fn check_docker(d: &mut DockerInfo) -> Result<()> {
    validate::image_name("docker_info.docker_image_name", &d.docker_image_name)?;
    validate::name("docker_info.docker_version", &d.docker_version, 128)?;
    if let Some(sha) = &d.docker_image_sha {
        d.docker_image_sha = Some(validate::image_sha("docker_info.docker_image_sha", sha)?);
    }
    if let Some(p) = &d.exposed_ports {
        if p.len() > 1024 {
            return Err(Error::field(
                "docker_info.exposed_ports",
                "at most 1024 ports",
            ));
        }
    }
    Ok(())
}

fn check_sgx(prefix: &str, s: &SgxAttributes) -> Result<SgxAttributes> {
    let f = |n: &str| format!("{prefix}{n}");
    let mrenclave = s
        .mrenclave
        .as_deref()
        .ok_or_else(|| Error::field(f("mrenclave"), "is required for an SGX build"))?;
    let mrsigner = s
        .mrsigner
        .as_deref()
        .ok_or_else(|| Error::field(f("mrsigner"), "is required for an SGX build"))?;
    Ok(SgxAttributes {
        mrenclave: Some(validate::hex_digest(&f("mrenclave"), mrenclave, 64)?),
        mrsigner: Some(validate::hex_digest(&f("mrsigner"), mrsigner, 64)?),
        isvprodid: Some(s.isvprodid.unwrap_or(0)),
        isvsvn: Some(s.isvsvn.unwrap_or(0)),
    })
}

fn check_nitro(n: &NitroEnclaveAttributes) -> Result<NitroEnclaveAttributes> {
    let p = "attributes.nitro_enclave.";
    Ok(NitroEnclaveAttributes {
        pcr0: validate::hex_digest(&format!("{p}pcr0"), &n.pcr0, 96)?,
        pcr1: validate::hex_digest(&format!("{p}pcr1"), &n.pcr1, 96)?,
        pcr2: validate::hex_digest(&format!("{p}pcr2"), &n.pcr2, 96)?,
        pcr8: n
            .pcr8
            .as_deref()
            .map(|v| validate::hex_digest(&format!("{p}pcr8"), v, 96))
            .transpose()?,
    })
}

impl NewBuild {
    /// Validates either request body.
    pub fn from_request(req: BuildRequest) -> Result<NewBuild> {
        match req {
            BuildRequest::Ccm(r) => NewBuild::from_ccm(*r),
            BuildRequest::Flat(r) => NewBuild::from_flat(r),
        }
    }

    fn from_ccm(mut r: CreateBuildRequest) -> Result<NewBuild> {
        check_docker(&mut r.docker_info)?;
        let attrs = r.attributes.clone().unwrap_or_default();
        let top = SgxAttributes {
            mrenclave: r.mrenclave.clone(),
            mrsigner: r.mrsigner.clone(),
            isvprodid: r.isvprodid,
            isvsvn: r.isvsvn,
        };
        let has_top = top.mrenclave.is_some() || top.mrsigner.is_some();
        let sgx = match (&attrs.sgx, has_top) {
            (Some(_), true) => {
                return Err(Error::field(
                    "attributes.sgx",
                    "give the SGX measurements once: at the top level or in attributes.sgx",
                ))
            }
            (Some(s), false) => Some(check_sgx("attributes.sgx.", s)?),
            (None, true) => Some(check_sgx("", &top)?),
            (None, false) => None,
        };
        let nitro = attrs.nitro_enclave.as_ref().map(check_nitro).transpose()?;
        match (&sgx, &nitro) {
            (Some(_), Some(_)) => {
                return Err(Error::field(
                    "attributes",
                    "a build is either SGX (mrenclave, mrsigner) or Nitro (pcr0..2), not both",
                ))
            }
            (None, None) => {
                return Err(Error::field(
                    "attributes",
                    "the build's measurements are missing: mrenclave and mrsigner for SGX, \
                     or attributes.nitro_enclave {pcr0, pcr1, pcr2} for Nitro",
                ))
            }
            _ => {}
        }
        if r.app_id.is_none() && r.app_name.is_none() {
            return Err(Error::field("app_id", "is required (or app_name)"));
        }
        let app_id = r
            .app_id
            .as_deref()
            .map(|a| validate::uuid("app_id", a))
            .transpose()?;
        if let Some(n) = &r.app_name {
            validate::name("app_name", n, 255)?;
        }
        let adv = r.advanced_settings.unwrap_or_else(|| json!({}));
        if !adv.is_object() {
            return Err(Error::field("advanced_settings", "must be a JSON object"));
        }
        Ok(NewBuild {
            app_id,
            app_name: r.app_name,
            create_app: false,
            docker: r.docker_info,
            sgx,
            nitro,
            mem_size: r.mem_size,
            threads: r.threads,
            advanced_settings: adv,
            debug: r.debug.unwrap_or(false),
        })
    }

    fn from_flat(r: FlatBuildRequest) -> Result<NewBuild> {
        let mut docker = DockerInfo {
            docker_image_name: r.docker_image_name,
            docker_version: r.docker_version,
            docker_image_sha: r.docker_image_sha,
            docker_image_size: r.docker_image_size,
            exposed_ports: None,
        };
        check_docker(&mut docker)?;
        validate::name("app_name", &r.app_name, 255)?;
        let sgx = check_sgx(
            "",
            &SgxAttributes {
                mrenclave: Some(r.mrenclave),
                mrsigner: Some(r.mrsigner),
                isvprodid: Some(r.isvprodid),
                isvsvn: Some(r.isvsvn),
            },
        )?;
        Ok(NewBuild {
            app_id: None,
            app_name: Some(r.app_name),
            create_app: true,
            docker,
            sgx: Some(sgx),
            nitro: None,
            mem_size: None,
            threads: None,
            advanced_settings: json!({}),
            debug: false,
        })
    }

    /// The key two registrations of the same measurements share.
    fn measurement_key(&self) -> String {
        if let Some(s) = &self.sgx {
            format!(
                "sgx:{}:{}:{}:{}",
                s.mrenclave.as_deref().unwrap_or(""),
                s.mrsigner.as_deref().unwrap_or(""),
                s.isvprodid.unwrap_or(0),
                s.isvsvn.unwrap_or(0)
            )
        } else if let Some(n) = &self.nitro {
            format!(
                "nitro:{}:{}:{}:{}",
                n.pcr0,
                n.pcr1,
                n.pcr2,
                n.pcr8.as_deref().unwrap_or("-")
            )
        } else {
            String::new()
        }
    }
}

/// Parses `POST /v1/builds`: CCM's CreateBuildRequest, or IBM's flat body (told apart by
/// `docker_info`), with errors that name the field.
pub fn parse_request(body: &[u8]) -> Result<BuildRequest> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::InvalidBody("the body must be a JSON object".into()));
    }
    if v.get("docker_info").is_some() || v.get("attributes").is_some() || v.get("app_id").is_some()
    {
        Ok(BuildRequest::Ccm(Box::new(crate::http::from_value(v)?)))
    } else if v.get("docker_image_name").is_some() {
        Ok(BuildRequest::Flat(crate::http::from_value(v)?))
    } else {
        Err(Error::field(
            "docker_info",
            "is required (CCM's CreateBuildRequest), or send IBM's flat body with docker_image_name",
        ))
    }
}

/// Registers a build and opens its BUILD_WHITELIST task.
pub async fn register(state: &State, p: &Principal, nb: NewBuild) -> Result<Build> {
    let app = prepare(state, p, &nb).await?;
    let mut tx = state.db.begin().await?;
    let (build_id, details) = insert(state, &mut tx, p, &nb, &app).await?;
    audit::record(state, tx, p, registered(&build_id, details)).await?;
    get(state, p, &build_id).await
}

/// The "Build Registered" audit record of [`insert`]'s answer.
pub fn registered(build_id: &str, details: Value) -> Event<'_> {
    Event {
        action: "Build Registered",
        entity_type: "build",
        entity_id: build_id,
        details,
    }
}

/// The app a registration goes to (created for IBM's flat body when a MANAGER asks), after
/// refusing revoked measurements: what must happen before the registering transaction.
pub async fn prepare(state: &State, p: &Principal, nb: &NewBuild) -> Result<cloak_api::App> {
    let app = match (&nb.app_id, &nb.app_name) {
        (Some(id), _) => apps::get(state, p, id).await?,
        (None, Some(name)) => match apps::find_by_name(state, p, name).await? {
            Some(a) => a,
            None if nb.create_app && p.role >= cloak_api::Role::Manager => {
                let created = apps::create(
                    state,
                    p,
                    AppRequest {
                        name: name.clone(),
                        input_image_name: nb.docker.docker_image_name.clone(),
                        output_image_name: nb.docker.docker_image_name.clone(),
                        ..Default::default()
                    },
                )
                .await;
                match created {
                    Ok(a) => a,
                    // Another request created it in between.
                    Err(Error::Conflict(_)) => apps::find_by_name(state, p, name)
                        .await?
                        .ok_or_else(|| Error::Internal("app vanished".into()))?,
                    Err(e) => return Err(e),
                }
            }
            None => {
                return Err(Error::field(
                    "app_name",
                    format!(
                    "no app named {name:?} in this account: a MANAGER creates it (POST /v1/apps) \
                         with its approval policy"
                ),
                ))
            }
        },
        (None, None) => return Err(Error::field("app_id", "is required")),
    };
    let key = nb.measurement_key();
    if let Some((old, reason)) = revoked(state.db.reader(), &p.account_id, &key).await? {
        return Err(Error::Conflict(format!(
            "these measurements were revoked with build {old} ({reason}); they cannot be registered again"
        )));
    }
    Ok(app)
}

/// Inserts the build (PENDING) and its BUILD_WHITELIST task in the caller's transaction; returns
/// the build id and the details of its "Build Registered" audit record, which the caller
/// records (a conversion job commits both with the job's end, so a job registers at most once).
pub async fn insert(
    state: &State,
    tx: &mut crate::store::Tx,
    p: &Principal,
    nb: &NewBuild,
    app: &cloak_api::App,
) -> Result<(String, Value)> {
    let key = nb.measurement_key();
    let now = state.clock.now();
    let build_id = uuid::Uuid::new_v4().to_string();
    let sgx = nb.sgx.clone().unwrap_or_default();
    let nitro = nb.nitro.clone();
    let body = json!({
        "docker_image_size": nb.docker.docker_image_size,
        "exposed_ports": nb.docker.exposed_ports,
        "mem_size": nb.mem_size,
        "threads": nb.threads,
        "advanced_settings": nb.advanced_settings,
        "configs": {},
    });
    let task_id = tasks::open(
        state,
        tx,
        p,
        &build_id,
        &app.approval_policy,
        &format!(
            "Whitelist build of {}:{} for app {}",
            nb.docker.docker_image_name, nb.docker.docker_version, app.name
        ),
    )
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO builds (build_id, account_id, app_id, status, status_updated_at, docker_image_name, \
         docker_version, docker_image_sha, mrenclave, mrsigner, isvprodid, isvsvn, pcr0, pcr1, pcr2, pcr8, \
         measurement_key, debug, body, task_id, created_at, updated_at) \
         VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $4, $4)",
    )
    .bind(&build_id)
    .bind(&p.account_id)
    .bind(&app.app_id)
    .bind(now)
    .bind(&nb.docker.docker_image_name)
    .bind(&nb.docker.docker_version)
    .bind(nb.docker.docker_image_sha.as_deref())
    .bind(sgx.mrenclave.as_deref())
    .bind(sgx.mrsigner.as_deref())
    .bind(nb.sgx.as_ref().map(|s| i64::from(s.isvprodid.unwrap_or(0))))
    .bind(nb.sgx.as_ref().map(|s| i64::from(s.isvsvn.unwrap_or(0))))
    .bind(nitro.as_ref().map(|n| n.pcr0.clone()))
    .bind(nitro.as_ref().map(|n| n.pcr1.clone()))
    .bind(nitro.as_ref().map(|n| n.pcr2.clone()))
    .bind(nitro.as_ref().and_then(|n| n.pcr8.clone()))
    .bind(&key)
    .bind(i64::from(nb.debug))
    .bind(body.to_string())
    .bind(&task_id)
    .execute(&mut **tx)
    .await
    .map_err(Error::from);
    if let Err(e) = inserted {
        if e.is_unique_violation() {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT build_id FROM builds WHERE app_id = $1 AND measurement_key = $2",
            )
            .bind(&app.app_id)
            .bind(&key)
            .fetch_optional(state.db.reader())
            .await?;
            return Err(Error::Conflict(format!(
                "app {} already has a build with these measurements: {}",
                app.name,
                existing.unwrap_or_else(|| "(just registered)".into())
            )));
        }
        return Err(e);
    }
    let measurements = match (&nb.sgx, &nitro) {
        (Some(s), _) => json!({"mrenclave": s.mrenclave, "mrsigner": s.mrsigner,
                                "isvprodid": s.isvprodid, "isvsvn": s.isvsvn}),
        (_, Some(n)) => json!({"pcr0": n.pcr0, "pcr1": n.pcr1, "pcr2": n.pcr2, "pcr8": n.pcr8}),
        _ => json!({}),
    };
    let details = json!({
        "app": app.name,
        "image": format!("{}:{}", nb.docker.docker_image_name, nb.docker.docker_version),
        "image_sha": nb.docker.docker_image_sha,
        "measurements": measurements,
        "task_id": task_id,
        "approval_policy": app.approval_policy,
    });
    Ok((build_id, details))
}

const COLS: &str = "b.build_id, b.app_id, a.name AS app_name, b.status, b.status_updated_at, \
    b.status_reason, b.docker_image_name, b.docker_version, b.docker_image_sha, b.mrenclave, \
    b.mrsigner, b.isvprodid, b.isvsvn, b.pcr0, b.pcr1, b.pcr2, b.pcr8, b.debug, b.body, b.task_id, \
    b.created_at, b.updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Build> {
    let body: Value = serde_json::from_str(&r.try_get::<String, _>("body")?)
        .map_err(|e| Error::Internal(format!("build body: {e}")))?;
    let status: String = r.try_get("status")?;
    let mrenclave: Option<String> = r.try_get("mrenclave")?;
    let isvprodid: Option<i64> = r.try_get("isvprodid")?;
    let isvsvn: Option<i64> = r.try_get("isvsvn")?;
    let pcr0: Option<String> = r.try_get("pcr0")?;
    let task_id: String = r.try_get("task_id")?;
    let sgx = mrenclave.as_ref().map(|m| SgxAttributes {
        mrenclave: Some(m.clone()),
        mrsigner: r.try_get("mrsigner").ok(),
        isvprodid: isvprodid.map(|v| v as u16),
        isvsvn: isvsvn.map(|v| v as u16),
    });
    let nitro = match pcr0 {
        Some(pcr0) => Some(NitroEnclaveAttributes {
            pcr0,
            pcr1: r.try_get::<Option<String>, _>("pcr1")?.unwrap_or_default(),
            pcr2: r.try_get::<Option<String>, _>("pcr2")?.unwrap_or_default(),
            pcr8: r.try_get("pcr8")?,
        }),
        None => None,
    };
    let num = |k: &str| body.get(k).and_then(Value::as_u64);
    Ok(Build {
        build_id: r.try_get("build_id")?,
        docker_info: DockerInfo {
            docker_image_name: r.try_get("docker_image_name")?,
            docker_version: r.try_get("docker_version")?,
            docker_image_sha: r.try_get("docker_image_sha")?,
            docker_image_size: num("docker_image_size"),
            exposed_ports: body.get("exposed_ports").and_then(Value::as_array).cloned(),
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        app_id: r.try_get("app_id")?,
        app_name: r.try_get("app_name")?,
        pending_task_id: (status == "PENDING").then(|| task_id.clone()),
        status: BuildStatus {
            status,
            status_updated_at: r.try_get("status_updated_at")?,
        },
        mrenclave: sgx.as_ref().and_then(|s| s.mrenclave.clone()),
        mrsigner: sgx.as_ref().and_then(|s| s.mrsigner.clone()),
        isvprodid: sgx.as_ref().and_then(|s| s.isvprodid),
        isvsvn: sgx.as_ref().and_then(|s| s.isvsvn),
        attributes: ImageAttributes {
            sgx,
            nitro_enclave: nitro,
        },
        mem_size: num("mem_size"),
        threads: num("threads").map(|v| v as u32),
        advanced_settings: body
            .get("advanced_settings")
            .cloned()
            .unwrap_or_else(|| json!({})),
        task_id,
        debug: r.try_get::<i64, _>("debug")? != 0,
        status_reason: r.try_get("status_reason")?,
    })
}

/// One build, for display (served from the read cache when it holds it: see cache.rs; nothing
/// that decides reads this).
pub async fn get(state: &State, p: &Principal, id: &str) -> Result<Build> {
    let row = sqlx::query(&format!(
        "SELECT {COLS} FROM builds b JOIN apps a ON a.app_id = b.app_id \
         WHERE b.account_id = $1 AND b.build_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "build",
        id: id.into(),
    })?;
    from_row(&row)
}

/// `GET /v1/builds/{id}`'s body: the build as JSON, from the read cache when it holds it
/// (cache.rs says when that is safe). Only this read goes through the cache; every other
/// reader, and every decision, queries the database.
pub async fn get_json(state: &State, p: &Principal, id: &str) -> Result<axum::body::Bytes> {
    if let Some(b) = state.db.cache.get(&p.account_id, id) {
        return Ok(axum::body::Bytes::clone(&b));
    }
    let generation = state.db.cache.generation();
    let build = get(state, p, id).await?;
    let json = axum::body::Bytes::from(
        serde_json::to_vec(&build).map_err(|e| Error::Internal(format!("build {id}: {e}")))?,
    );
    state.db.cache.put(generation, &p.account_id, id, &json);
    Ok(json)
}

/// The builds of `ids` that exist in the caller's account, in one query (a page of tasks shows
/// each one's build).
pub async fn get_many(state: &State, p: &Principal, ids: &[String]) -> Result<Vec<Build>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
    // `|| ''` keeps SQLite's planner off the account's indexes (it would read all the
    // account's builds rather than look up these few by primary key).
    let sql = format!(
        "SELECT {COLS} FROM builds b JOIN apps a ON a.app_id = b.app_id \
         WHERE b.build_id IN ({}) AND b.account_id || '' = $1",
        marks.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(&p.account_id);
    for id in ids {
        q = q.bind(id);
    }
    let rows = q.fetch_all(state.db.reader()).await?;
    rows.iter().map(from_row).collect()
}

/// Every build of an app (for attestation: matched on measurements).
pub async fn for_app(state: &State, app_id: &str) -> Result<Vec<Build>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM builds b JOIN apps a ON a.app_id = b.app_id WHERE b.app_id = $1 \
         ORDER BY b.created_at DESC"
    ))
    .bind(app_id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter().map(from_row).collect()
}

/// Filters of `GET /v1/builds` (CCM's query parameters).
#[derive(Debug, Default, Clone)]
pub struct BuildFilter {
    pub status: Option<String>,
    pub docker_image_name: Option<String>,
    pub all_search: Option<String>,
    pub app_id: Option<String>,
    pub sort_by: Option<String>,
    /// The start of a hex MRENCLAVE, MRSIGNER or PCR0 (an index range, unlike `all_search`).
    pub measurement: Option<String>,
    /// The start of the image name, ASCII case-insensitive (an index range on the lower-cased
    /// name, unlike `docker_image_name`'s substring match over every build).
    pub image_prefix: Option<String>,
}

fn order_by(sort_by: Option<&str>) -> Result<String> {
    let Some(s) = sort_by.filter(|s| !s.is_empty()) else {
        return Ok("b.created_at DESC, b.build_id".into());
    };
    let mut parts = Vec::new();
    for item in s.split(',') {
        let (key, dir) = item.split_once(':').unwrap_or((item, "ASC"));
        let col = match key {
            "created_at" => "b.created_at",
            "updated_at" => "b.updated_at",
            "docker_image_name" => "b.docker_image_name",
            "status" => "b.status",
            "app_name" => "a.name",
            _ => {
                return Err(Error::field(
                    "sort_by",
                    format!(
                        "unknown key {key:?}: use created_at, updated_at, docker_image_name, status or app_name"
                    ),
                ))
            }
        };
        let dir = match dir.to_ascii_uppercase().as_str() {
            "ASC" => "ASC",
            "DESC" => "DESC",
            _ => return Err(Error::field("sort_by", "direction must be ASC or DESC")),
        };
        parts.push(format!("{col} {dir}"));
    }
    parts.push("b.build_id".into());
    Ok(parts.join(", "))
}

pub async fn list(
    state: &State,
    p: &Principal,
    f: &BuildFilter,
    limit: i64,
    offset: i64,
) -> Result<(i64, i64, Vec<Build>)> {
    let mut wh = String::from("b.account_id = $1");
    let mut args: Vec<String> = vec![p.account_id.clone()];
    if let Some(s) = &f.status {
        let s = s.to_ascii_uppercase();
        if !["PENDING", "WHITELISTED", "REJECTED"].contains(&s.as_str()) {
            return Err(Error::field(
                "status",
                "must be PENDING, WHITELISTED or REJECTED",
            ));
        }
        args.push(s);
        wh.push_str(&format!(" AND b.status = ${}", args.len()));
    }
    if let Some(a) = &f.app_id {
        args.push(a.clone());
        wh.push_str(&format!(" AND b.app_id = ${}", args.len()));
    }
    if let Some(n) = f.docker_image_name.as_ref().filter(|s| !s.is_empty()) {
        args.push(validate::like_pattern(n));
        let i = args.len();
        wh.push_str(&format!(
            " AND (LOWER(b.docker_image_name) LIKE ${i} ESCAPE '\\' OR LOWER(a.output_image_name) LIKE ${i} ESCAPE '\\')"
        ));
    }
    if let Some(s) = f.all_search.as_ref().filter(|s| !s.is_empty()) {
        args.push(validate::like_pattern(s));
        let i = args.len();
        wh.push_str(&format!(
            " AND (LOWER(b.docker_image_name) LIKE ${i} ESCAPE '\\' OR LOWER(a.name) LIKE ${i} ESCAPE '\\' OR LOWER(a.output_image_name) LIKE ${i} ESCAPE '\\' \
             OR b.mrenclave LIKE ${i} ESCAPE '\\' OR b.mrsigner LIKE ${i} ESCAPE '\\' \
             OR b.pcr0 LIKE ${i} ESCAPE '\\')"
        ));
    }
    if let Some(n) = f.image_prefix.as_ref().filter(|s| !s.is_empty()) {
        // Image names are ASCII (registry hosts and OCI repositories); SQLite's LOWER folds
        // ASCII only, so the typed prefix is folded the same way. The upper bound is the prefix
        // followed by the largest code point: under a bytewise order exactly the names that
        // start with the prefix lie in between.
        let lo = n.to_ascii_lowercase();
        let hi = format!("{lo}\u{10FFFF}");
        args.push(lo);
        args.push(hi);
        let (lo, hi) = (args.len() - 1, args.len());
        let c = state.db.collate_c();
        wh.push_str(&format!(
            " AND LOWER(b.docker_image_name){c} >= ${lo} AND LOWER(b.docker_image_name){c} < ${hi}"
        ));
    }
    if let Some(m) = f.measurement.as_ref().filter(|s| !s.is_empty()) {
        // A prefix of a hex measurement, as a range over each column's index.
        let m = m.to_ascii_lowercase();
        if !m.bytes().all(|c| c.is_ascii_hexdigit()) || m.len() > 96 {
            return Err(Error::field(
                "measurement",
                "must be the start of a hex MRENCLAVE, MRSIGNER or PCR0 (at most 96 digits)",
            ));
        }
        args.push(m.clone());
        args.push(format!("{m}g"));
        let (lo, hi) = (args.len() - 1, args.len());
        // One indexed range per column (an OR of the three would scan the account's builds).
        wh.push_str(&format!(
            " AND b.build_id IN (SELECT build_id FROM builds WHERE mrenclave >= ${lo} AND mrenclave < ${hi} \
             UNION SELECT build_id FROM builds WHERE mrsigner >= ${lo} AND mrsigner < ${hi} \
             UNION SELECT build_id FROM builds WHERE pcr0 >= ${lo} AND pcr0 < ${hi})"
        ));
    }
    let order = order_by(f.sort_by.as_deref())?;
    // Without a filter or order on the app, counting and paging need no join: they run on the
    // builds indexes alone (a deep page skips index entries instead of joined rows).
    let needs_app = wh.contains("a.") || order.contains("a.");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM builds WHERE account_id = $1")
        .bind(&p.account_id)
        .fetch_one(state.db.reader())
        .await?;
    let count_sql = if needs_app {
        format!("SELECT COUNT(*) FROM builds b JOIN apps a ON a.app_id = b.app_id WHERE {wh}")
    } else {
        format!("SELECT COUNT(*) FROM builds b WHERE {wh}")
    };
    let mut q = sqlx::query_scalar::<_, i64>(&count_sql);
    for a in &args {
        q = q.bind(a);
    }
    let filtered = if args.len() == 1 {
        total
    } else {
        q.fetch_one(state.db.reader()).await?
    };
    let sql = if needs_app {
        format!(
            "SELECT {COLS} FROM builds b JOIN apps a ON a.app_id = b.app_id WHERE {wh} \
             ORDER BY {order} LIMIT {limit} OFFSET {offset}"
        )
    } else {
        format!(
            "SELECT {COLS} FROM builds b JOIN apps a ON a.app_id = b.app_id WHERE b.build_id IN \
             (SELECT b.build_id FROM builds b WHERE {wh} ORDER BY {order} LIMIT {limit} OFFSET {offset}) \
             ORDER BY {order}"
        )
    };
    let mut q = sqlx::query(&sql);
    for a in &args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(state.db.reader()).await?;
    Ok((
        total,
        filtered,
        rows.iter().map(from_row).collect::<Result<_>>()?,
    ))
}

pub async fn update(state: &State, p: &Principal, id: &str, patch: BuildPatch) -> Result<Build> {
    let mut tx = state.db.begin().await?;
    let row: Option<(String, String)> = sqlx::query_as(&format!(
        "SELECT body, status FROM builds WHERE account_id = $1 AND build_id = $2{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (body, status) = row.ok_or_else(|| Error::NotFound {
        kind: "build",
        id: id.into(),
    })?;
    let mut body: Value =
        serde_json::from_str(&body).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(c) = &patch.configs {
        let v = serde_json::to_value(c).expect("serialisable");
        if audit::canonical(&v).len() > 64 * 1024 {
            return Err(Error::field("configs", "must be at most 64 KiB of JSON"));
        }
        body["configs"] = v;
    }
    if let Some(a) = &patch.advanced_settings {
        if !a.is_object() {
            return Err(Error::field("advanced_settings", "must be a JSON object"));
        }
        // The certificates a build may get (subjects, SANs, key types) are part of what its
        // quorum approved: one writer must not change the names the CA vouches for afterwards.
        let before = body["advanced_settings"].get("certificates");
        if status != "PENDING" && a.get("certificates") != before {
            return Err(Error::Conflict(format!(
                "build {id} is {status}: its advanced_settings.certificates were approved with it \
                 and cannot change; register a new build (its approval task covers the new \
                 certificates)"
            )));
        }
        body["advanced_settings"] = a.clone();
    }
    sqlx::query(
        "UPDATE builds SET body = $1, updated_at = $2 WHERE account_id = $3 AND build_id = $4",
    )
    .bind(body.to_string())
    .bind(state.clock.now())
    .bind(&p.account_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit::record(state, tx, p, Event {
        action: "Build Updated",
        entity_type: "build",
        entity_id: id,
        details: json!({"configs": patch.configs.is_some(), "advanced_settings": patch.advanced_settings.is_some()}),
    })
    .await?;
    get(state, p, id).await
}

/// Locks a build's task row, then the build row (the order `tasks::decide` uses too, so the two
/// never deadlock); returns (status, task_id, measurement_key).
async fn lock_build(
    state: &State,
    tx: &mut crate::store::Tx,
    p: &Principal,
    id: &str,
) -> Result<(String, String, String)> {
    let not_found = || Error::NotFound {
        kind: "build",
        id: id.into(),
    };
    let task_id: String =
        sqlx::query_scalar("SELECT task_id FROM builds WHERE account_id = $1 AND build_id = $2")
            .bind(&p.account_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(not_found)?;
    sqlx::query(&format!(
        "SELECT task_id FROM tasks WHERE task_id = $1{}",
        state.db.for_update()
    ))
    .bind(&task_id)
    .fetch_optional(&mut **tx)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT status, task_id, measurement_key FROM builds WHERE account_id = $1 AND build_id = $2{}",
        state.db.for_update()
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(not_found)?;
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

/// Sets a build's status to REJECTED with a reason (revocation of a whitelisted build, or the
/// end of a pending one); its open task fails, and its measurements join the account's
/// revocation list, so no app of the account can whitelist them again.
pub async fn revoke(state: &State, p: &Principal, id: &str, reason: &str) -> Result<Build> {
    validate::name("reason", reason, 1024)?;
    let mut tx = state.db.begin().await?;
    let (status, task_id, key) = lock_build(state, &mut tx, p, id).await?;
    if status == "REJECTED" {
        return Err(Error::Conflict(format!("build {id} is already REJECTED")));
    }
    let now = state.clock.now();
    sqlx::query(
        "UPDATE builds SET status = 'REJECTED', status_reason = $1, status_updated_at = $2, updated_at = $2 \
         WHERE build_id = $3",
    )
    .bind(reason)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO revoked_measurements (account_id, measurement_key, build_id, reason, revoked_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, measurement_key) DO NOTHING",
    )
    .bind(&p.account_id)
    .bind(&key)
    .bind(id)
    .bind(reason)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tasks::fail_open(&mut tx, &task_id, "the build was revoked", now).await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Build Revoked",
            entity_type: "build",
            entity_id: id,
            details: json!({"from": status, "reason": reason}),
        },
    )
    .await?;
    get(state, p, id).await
}

/// Deletes a PENDING build (a decided one stays on record; revoke it instead).
pub async fn delete(state: &State, p: &Principal, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let (status, task_id, _) = lock_build(state, &mut tx, p, id).await?;
    if status != "PENDING" {
        return Err(Error::Conflict(format!(
            "build {id} is {status}: decided builds stay on record (revoke a whitelisted one)"
        )));
    }
    sqlx::query("DELETE FROM builds WHERE build_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tasks::fail_open(
        &mut tx,
        &task_id,
        "the build was deleted",
        state.clock.now(),
    )
    .await?;
    audit::record(
        state,
        tx,
        p,
        Event {
            action: "Build Deleted",
            entity_type: "build",
            entity_id: id,
            details: json!({}),
        },
    )
    .await?;
    Ok(())
}

/// The revocation that bans these measurements in the account, if any: (build id, reason).
pub async fn revoked(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
    account_id: &str,
    measurement_key: &str,
) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT build_id, reason FROM revoked_measurements WHERE account_id = $1 AND measurement_key = $2",
    )
    .bind(account_id)
    .bind(measurement_key)
    .fetch_optional(exec)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// Builds per status in one account (for `/metrics`: across accounts).
/// Builds of one account by status (one pass over the status index).
pub async fn count_by_status_in(state: &State, p: &Principal) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) FROM builds WHERE account_id = $1 GROUP BY status ORDER BY status",
    )
    .bind(&p.account_id)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub async fn count_by_status(state: &State) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT status, COUNT(*) FROM builds GROUP BY status")
        .fetch_all(state.db.reader())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
