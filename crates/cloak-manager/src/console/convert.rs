//! Conversions from the console: the SGX and Nitro forms (the seeds' options, named as the API
//! names them, so an error lands beside its field), the job page with its live progress, and
//! the result's measurements with links to the build and its task.

use std::fmt::Write;

use axum::extract::{Path, RawQuery, State as S};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::html::{badge, csrf, e, field, q, select, time, Kind, Refill};
use super::pages::{measurements, progress, query, respond};
use super::{page, see_other, Fields, Post, Session};
use crate::error::{Error, Result};
use crate::{apps, builds, jobs, tasks, State};
use cloak_api::*;

/// The overview's list of queued and running conversions.
pub(super) async fn running_jobs(state: &State, s: &Session) -> Result<String> {
    if !s.can("listJobs") {
        return Ok(String::new());
    }
    let mut out = String::new();
    let mut n = 0;
    for st in ["RUNNING", "QUEUED"] {
        let (_, _, items) = jobs::list(state, &s.p, Some(st), 10, 0).await?;
        for j in &items {
            n += 1;
            let _ = write!(
                out,
                r#"<li><a href="/jobs/{id}">{t} {img}</a> {st} {stage}</li>"#,
                id = e(&j.job_id),
                t = j.target.as_str(),
                img = e(&j.input_image),
                st = badge(j.state.as_str()),
                stage = e(j.stage.as_deref().unwrap_or(""))
            );
        }
    }
    Ok(if n == 0 {
        "<p>No conversion is running.</p>".into()
    } else {
        format!("<ul>{out}</ul>")
    })
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ConvertQuery {
    app_id: Option<String>,
    target: Option<String>,
}

pub(super) async fn convert(S(state): S<State>, s: Session, RawQuery(raw): RawQuery) -> Response {
    respond(
        async {
            let cq: ConvertQuery = query(&raw)?;
            convert_page(&state, &s, &cq, StatusCode::OK, &Refill::default()).await
        }
        .await,
    )
}

fn target_of(t: Option<&str>) -> Result<&'static str> {
    match t.unwrap_or("nitro") {
        "nitro" => Ok("nitro"),
        "sgx" => Ok("sgx"),
        _ => Err(Error::field("target", "must be nitro or sgx")),
    }
}

/// The conversion form of a target with the seeds' options, defaults and help.
async fn convert_page(
    state: &State,
    s: &Session,
    cq: &ConvertQuery,
    status: StatusCode,
    r: &Refill,
) -> Result<Response> {
    s.may("getAllApps")?;
    let target = target_of(cq.target.as_deref())?;
    let mut body = String::from(r#"<nav class="tabs" aria-label="target"><ul>"#);
    for (t, l) in [("nitro", "AWS Nitro Enclaves"), ("sgx", "Intel SGX")] {
        let cur = if t == target {
            r#" aria-current="page""#
        } else {
            ""
        };
        let app_q = cq
            .app_id
            .as_deref()
            .map(|a| format!("&app_id={}", q(a)))
            .unwrap_or_default();
        let _ = write!(
            body,
            r#"<li><a href="/convert?target={t}{app_q}"{cur}>{l}</a></li>"#
        );
    }
    body.push_str("</ul></nav>");
    let op = if target == "nitro" {
        "convertAppBuildNitroEnclaves"
    } else {
        "convertApp"
    };
    if !s.can(op) {
        body.push_str("<p>Converting needs the WRITER role.</p>");
        body.push_str(&recent_jobs(state, s).await?);
        return Ok(page(s, status, "/convert", "Convert an image", &body));
    }
    let (_, list) = apps::list(state, &s.p, 1000, 0).await?;
    let app_field = if target == "nitro" {
        "request.app_id"
    } else {
        "appId"
    };
    let sel = r
        .value(app_field)
        .filter(|_| r.form == "convert")
        .or(cq.app_id.as_deref())
        .unwrap_or("")
        .to_string();
    let chosen = list.iter().find(|a| a.app_id == sel);
    let mut opts: Vec<(&str, &str)> = vec![("", "choose an application")];
    opts.extend(list.iter().map(|a| (a.app_id.as_str(), a.name.as_str())));
    let _ = write!(
        body,
        r#"<form method="post" action="/convert" class="card">{c}<input type="hidden" name="target" value="{target}">"#,
        c = csrf(&s.csrf)
    );
    select(&mut body, "convert", app_field, "Application", &opts, &sel);
    if let Some(p) = r
        .problem
        .as_deref()
        .filter(|p| r.form == "convert" && p.names(app_field))
    {
        p.placed.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = write!(
            body,
            r#"<p class="error" role="alert"><strong>{}</strong>: {}</p>"#,
            e(&p.kind),
            e(&p.detail)
        );
    }
    let input = chosen.map(|a| a.input_image_name.as_str()).unwrap_or("");
    let output = chosen.map(|a| a.output_image_name.as_str()).unwrap_or("");
    let (in_name, out_name) = if target == "nitro" {
        ("request.input_image.name", "request.output_image.name")
    } else {
        ("inputImageName", "outputImageName")
    };
    field(
        &mut body,
        r,
        "convert",
        in_name,
        "Input image",
        Kind::Text,
        input,
        "HOST[:PORT]/REPOSITORY:TAG of the image to convert.",
    );
    let id_of = |n: &str| format!("convert-{}", n.replace('.', "-"));
    let _ = write!(
        body,
        r#"<p class="help saved" data-saved-for="{}" aria-live="polite"></p>"#,
        id_of(in_name)
    );
    let (in_auth, out_auth) = auth_fields(target);
    one_off_credentials(&mut body, r, in_auth, "the input image's registry");
    field(
        &mut body,
        r,
        "convert",
        out_name,
        "Output image",
        Kind::Text,
        output,
        "Where the converted image is pushed (the tag is written last).",
    );
    let _ = write!(
        body,
        r#"<p class="help saved" data-saved-for="{}" aria-live="polite"></p>"#,
        id_of(out_name)
    );
    one_off_credentials(&mut body, r, out_auth, "the output image's registry");
    body.push_str(r#"<p class="help">Registry credentials: the saved credential of each image's registry is used (Registry credentials page) unless you enter credentials for this job; none is needed for a public or unauthenticated registry.</p>"#);
    if target == "nitro" {
        body.push_str("<fieldset><legend>Converter options</legend>");
        let co = "request.converter_options";
        field(
            &mut body,
            r,
            "convert",
            &format!("{co}.entrypoint"),
            "Entrypoint",
            Kind::Text,
            "",
            "Replaces the image's Entrypoint; words separated by spaces. Empty keeps it.",
        );
        field(
            &mut body,
            r,
            "convert",
            &format!("{co}.env_vars"),
            "Fixed environment",
            Kind::TextArea,
            "",
            "NAME=value, one per line; measured into the enclave.",
        );
        field(
            &mut body,
            r,
            "convert",
            &format!("{co}.allow_cmdline_args"),
            "Accept command-line arguments at run time",
            Kind::Checkbox,
            "",
            "",
        );
        field(
            &mut body,
            r,
            "convert",
            &format!("{co}.debug"),
            "Debug mode (never in production)",
            Kind::Checkbox,
            "",
            "",
        );
        body.push_str("</fieldset><fieldset><legend>Nitro Enclaves options</legend>");
        let no = "nitro_enclaves_options";
        field(
            &mut body,
            r,
            "convert",
            &format!("{no}.mem_size"),
            "Memory (MiB)",
            Kind::Number,
            "1024",
            "The enclave's memory; it must hold four times the EIF.",
        );
        field(
            &mut body,
            r,
            "convert",
            &format!("{no}.cpu_count"),
            "vCPUs",
            Kind::Number,
            "2",
            "",
        );
        field(
            &mut body,
            r,
            "convert",
            &format!("{no}.enable_overlay_filesystem_persistence"),
            "Keep file system changes across restarts",
            Kind::Checkbox,
            "",
            "",
        );
    } else {
        body.push_str("<fieldset><legend>SGX options</legend>");
        let mem = chosen
            .map(|a| format!("{}M", a.mem_size))
            .unwrap_or_else(|| "1024M".into());
        field(
            &mut body,
            r,
            "convert",
            "memSize",
            "Enclave size",
            Kind::Text,
            &mem,
            "A power of two with K, M or G, e.g. 1024M.",
        );
        let th = chosen
            .map(|a| a.threads.to_string())
            .unwrap_or_else(|| "16".into());
        field(
            &mut body,
            r,
            "convert",
            "threads",
            "Threads",
            Kind::Number,
            &th,
            "Maximum threads in the enclave, 1 to 4096.",
        );
        let (pid, svn) = chosen.map(|a| (a.isvprodid, a.isvsvn)).unwrap_or((0, 0));
        field(
            &mut body,
            r,
            "convert",
            "isvprodid",
            "ISV product id",
            Kind::Number,
            &pid.to_string(),
            "0 to 65535.",
        );
        field(
            &mut body,
            r,
            "convert",
            "isvsvn",
            "ISV security version",
            Kind::Number,
            &svn.to_string(),
            "0 to 65535.",
        );
        field(
            &mut body,
            r,
            "convert",
            "entrypoint",
            "Entrypoint",
            Kind::Text,
            "",
            "Replaces the image's Entrypoint; words separated by spaces. Empty keeps it.",
        );
        field(
            &mut body,
            r,
            "convert",
            "manifestEnv",
            "Fixed environment",
            Kind::TextArea,
            "",
            "NAME=value, one per line; measured into the enclave.",
        );
        field(
            &mut body,
            r,
            "convert",
            "allowCmdlineArgs",
            "Accept command-line arguments at run time",
            Kind::Checkbox,
            "",
            "",
        );
        field(
            &mut body,
            r,
            "convert",
            "debug",
            "Debug enclave (never in production)",
            Kind::Checkbox,
            "",
            "",
        );
    }
    body.push_str("</fieldset>");
    body.push_str(&r.unplaced("convert"));
    body.push_str(r#"<button type="submit">Convert</button></form>"#);
    body.push_str(&recent_jobs(state, s).await?);
    Ok(page(s, status, "/convert", "Convert an image", &body))
}

/// The API's names of the one-off credentials of the input and output images (so a refused
/// value lands beside its field).
fn auth_fields(target: &str) -> (&'static str, &'static str) {
    if target == "nitro" {
        (
            "request.input_image.auth_config",
            "request.output_image.auth_config",
        )
    } else {
        ("inputAuthConfig", "outputAuthConfig")
    }
}

/// Username and password-or-token for one registry, used by this job only: sealed in the job
/// row under the master key and erased when the job ends, never saved, never shown again (the
/// password field is never refilled).
fn one_off_credentials(out: &mut String, r: &Refill, prefix: &str, what: &str) {
    let _ = write!(
        out,
        "<fieldset><legend>Credentials for {what}, this job only (optional)</legend>"
    );
    field(
        out,
        r,
        "convert",
        &format!("{prefix}.username"),
        "Username",
        Kind::Text,
        "",
        "Empty: the saved credentials of the registry, if any.",
    );
    field(
        out,
        r,
        "convert",
        &format!("{prefix}.password"),
        "Password or token",
        Kind::Password,
        "",
        "Used for this conversion only: sealed with the job, erased when it ends, never saved or shown.",
    );
    out.push_str("</fieldset>");
}

/// The one-off credentials a form gives for `prefix`: none when both fields are empty; a
/// username without a password (or the reverse) is refused beside the empty field.
fn one_off_of(f: &Fields, prefix: &str) -> Result<Option<Value>> {
    let user = f.get(&format!("{prefix}.username")).trim();
    let password = f.get(&format!("{prefix}.password"));
    match (user.is_empty(), password.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(json!({"username": user, "password": password}))),
        (true, false) => Err(Error::field(
            format!("{prefix}.username"),
            "enter the username that goes with this password or token, or clear both to use the saved credentials",
        )),
        (false, true) => Err(Error::field(
            format!("{prefix}.password"),
            "enter the password or token of this username, or clear both to use the saved credentials",
        )),
    }
}

async fn recent_jobs(state: &State, s: &Session) -> Result<String> {
    if !s.can("listJobs") {
        return Ok(String::new());
    }
    let (_, _, items) = jobs::list(state, &s.p, None, 10, 0).await?;
    let mut out = String::from(
        r#"<h2>Recent conversions</h2><table><caption class="sr-only">Recent conversions</caption><thead><tr><th scope="col">Job</th><th scope="col">Target</th><th scope="col">State</th><th scope="col">Created</th></tr></thead><tbody>"#,
    );
    for j in &items {
        let _ = write!(
            out,
            r#"<tr><td><a href="/jobs/{id}">{img}</a></td><td>{t}</td><td>{st}</td><td>{c}</td></tr>"#,
            id = e(&j.job_id),
            img = e(&j.input_image),
            t = j.target.as_str(),
            st = badge(j.state.as_str()),
            c = time(j.created_at / 1000)
        );
    }
    if items.is_empty() {
        out.push_str(r#"<tr><td colspan="4">No conversions yet.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

fn words(s: &str) -> Option<Value> {
    let w: Vec<&str> = s.split_whitespace().collect();
    (!w.is_empty()).then(|| json!(w))
}

fn lines(s: &str) -> Option<Value> {
    let l: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    (!l.is_empty()).then(|| json!(l))
}

fn num(s: &str) -> Option<Value> {
    let s = s.trim();
    (!s.is_empty()).then(|| {
        s.parse::<i64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(s))
    })
}

/// The API request a form describes, as the endpoint's JSON.
fn request_of(f: &Fields, target: &str) -> Result<Value> {
    let (in_auth, out_auth) = auth_fields(target);
    let (in_auth, out_auth) = (one_off_of(f, in_auth)?, one_off_of(f, out_auth)?);
    let put = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    if target == "nitro" {
        let g = |k: &str| f.get(&format!("request.converter_options.{k}"));
        let mut co = Map::new();
        put(&mut co, "entrypoint", words(g("entrypoint")));
        put(&mut co, "env_vars", lines(g("env_vars")));
        put(
            &mut co,
            "allow_cmdline_args",
            Some(json!(g("allow_cmdline_args") == "on")),
        );
        put(&mut co, "debug", Some(json!(g("debug") == "on")));
        let n = |k: &str| f.get(&format!("nitro_enclaves_options.{k}"));
        let mut no = Map::new();
        put(&mut no, "mem_size", num(n("mem_size")));
        put(&mut no, "cpu_count", num(n("cpu_count")));
        put(
            &mut no,
            "enable_overlay_filesystem_persistence",
            Some(json!(n("enable_overlay_filesystem_persistence") == "on")),
        );
        let mut input = Map::new();
        put(
            &mut input,
            "name",
            Some(json!(f.get("request.input_image.name").trim())),
        );
        put(&mut input, "auth_config", in_auth);
        let mut output = Map::new();
        put(
            &mut output,
            "name",
            Some(json!(f.get("request.output_image.name").trim())),
        );
        put(&mut output, "auth_config", out_auth);
        Ok(json!({
            "request": {
                "app_id": f.get("request.app_id"),
                "input_image": input,
                "output_image": output,
                "converter_options": co,
            },
            "nitro_enclaves_options": no,
        }))
    } else {
        let mut m = Map::new();
        put(&mut m, "appId", f.opt("appId").map(|a| json!(a)));
        put(
            &mut m,
            "inputImageName",
            Some(json!(f.get("inputImageName").trim())),
        );
        put(
            &mut m,
            "outputImageName",
            Some(json!(f.get("outputImageName").trim())),
        );
        put(&mut m, "memSize", f.opt("memSize").map(|v| json!(v)));
        put(&mut m, "threads", num(f.get("threads")));
        put(&mut m, "isvprodid", num(f.get("isvprodid")));
        put(&mut m, "isvsvn", num(f.get("isvsvn")));
        put(&mut m, "entrypoint", words(f.get("entrypoint")));
        put(&mut m, "manifestEnv", lines(f.get("manifestEnv")));
        put(
            &mut m,
            "allowCmdlineArgs",
            Some(json!(f.checked("allowCmdlineArgs"))),
        );
        put(&mut m, "debug", Some(json!(f.checked("debug"))));
        put(&mut m, "inputAuthConfig", in_auth);
        put(&mut m, "outputAuthConfig", out_auth);
        Ok(Value::Object(m))
    }
}

pub(super) async fn submit(S(state): S<State>, Post { s, f }: Post) -> Response {
    let target = f.get("target").to_string();
    let r: Result<Job> = async {
        let target = target_of(Some(&target))?;
        let body = serde_json::to_vec(&request_of(&f, target)?).expect("JSON");
        let request = if target == "nitro" {
            s.may("convertAppBuildNitroEnclaves")?;
            jobs::ConvertRequest::Nitro(jobs::parse_nitro(&body)?)
        } else {
            s.may("convertApp")?;
            jobs::ConvertRequest::Sgx(jobs::parse_sgx(&body)?)
        };
        let submission = jobs::Submission {
            request,
            idempotency_key: None,
        };
        jobs::submit(&state, &s.p, submission).await
    }
    .await;
    match r {
        Ok(job) => see_other(&format!("/jobs/{}", job.job_id)),
        Err(err) => {
            let refill = f.refill("convert", &err);
            let cq = ConvertQuery {
                app_id: None,
                target: Some(target).filter(|t| t == "sgx" || t == "nitro"),
            };
            match convert_page(&state, &s, &cq, err.status(), &refill).await {
                Ok(resp) => resp,
                Err(e2) => super::error_response(&e2),
            }
        }
    }
}

pub(super) async fn job_state(S(state): S<State>, s: Session, Path(id): Path<String>) -> Response {
    let r: Result<Job> = async {
        s.may("getJob")?;
        jobs::get(&state, &s.p, &crate::validate::uuid("job_id", &id)?).await
    }
    .await;
    match r {
        Ok(j) => Json(j).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn job(S(state): S<State>, s: Session, Path(id): Path<String>) -> Response {
    respond(
        async {
            s.may("getJob")?;
            let j = jobs::get(&state, &s.p, &crate::validate::uuid("job_id", &id)?).await?;
            let mut body = format!(
                r#"<dl class="facts"><dt>Target</dt><dd>{t}</dd><dt>Input</dt><dd>{i}</dd><dt>Output</dt><dd>{o}</dd><dt>Submitted</dt><dd>{c}</dd><dt>Attempts</dt><dd>{a}</dd></dl>"#,
                t = j.target.as_str(),
                i = e(&j.input_image),
                o = e(&j.output_image),
                c = time(j.created_at / 1000),
                a = j.attempts
            );
            let state_text = format!(
                "{}{} · {} bytes",
                j.state.as_str(),
                j.stage.as_deref().map(|s| format!(" · {s}")).unwrap_or_default(),
                j.bytes_done
            );
            let bar = match j.bytes_total {
                Some(t) if t > 0 => format!(r#"<progress id="job-progress" max="{t}" value="{}" aria-labelledby="job-progress-label"></progress>"#, j.bytes_done.min(t)),
                _ if j.state.is_final() => r#"<progress id="job-progress" max="1" value="1" aria-labelledby="job-progress-label"></progress>"#.to_string(),
                _ => r#"<progress id="job-progress" aria-labelledby="job-progress-label"></progress>"#.into(),
            };
            let live = if j.state.is_final() { String::new() } else { format!(r#" data-job="{}""#, e(&j.job_id)) };
            let _ = write!(
                body,
                r#"<section class="card" aria-labelledby="job-progress-label"{live}><h2 id="job-progress-label">Progress</h2>{bar}<p class="job-state" role="status">{st}</p></section>"#,
                st = e(&state_text)
            );
            if let Some(err) = &j.error {
                let _ = write!(body, r#"<p class="error" role="alert"><strong>{}</strong>: {}</p>"#, e(&err.stage), e(&err.message));
            }
            if !j.state.is_final() && s.can("cancelJob") {
                let _ = write!(
                    body,
                    r#"<form method="post" action="/jobs/{id}/cancel">{c}<button type="submit" class="danger">Cancel the conversion</button></form>"#,
                    id = e(&j.job_id),
                    c = csrf(&s.csrf)
                );
            }
            if let Some(bid) = &j.build_id {
                let b = builds::get(&state, &s.p, bid).await?;
                let t = tasks::get(&state, &s.p, &b.task_id).await?;
                let _ = write!(
                    body,
                    r#"<h2>Result</h2><p>Build {st} · <a href="/builds/{bid}" id="result-build">the build</a> · <a href="/tasks?tab=pending#task-{tid}">its approval task</a> ({p})</p>"#,
                    st = badge(&b.status.status),
                    bid = e(&b.build_id),
                    tid = e(&t.task_id),
                    p = e(&progress(&t))
                );
                body.push_str(&measurements(&b));
            }
            Ok(page(&s, StatusCode::OK, "/convert", &format!("Conversion {}", j.state.as_str()), &body))
        }
        .await,
    )
}

pub(super) async fn cancel(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f: _ }: Post,
) -> Response {
    let r: Result<Job> = async {
        s.may("cancelJob")?;
        jobs::cancel(&state, &s.p, &crate::validate::uuid("job_id", &id)?).await
    }
    .await;
    match r {
        Ok(j) => see_other(&format!("/jobs/{}", j.job_id)),
        Err(e) => super::error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The one-off fields become the API's own auth configs of each target (what the job seals),
    /// and the form's Debug never shows them.
    #[test]
    fn one_off_credentials_map_to_each_targets_auth_configs() {
        let f = form(&[
            ("inputImageName", "reg.example/a:1"),
            ("outputImageName", "reg.example/a-sgx:1"),
            ("inputAuthConfig.username", "alice"),
            ("inputAuthConfig.password", "in-secret"),
        ]);
        let sgx = request_of(&f, "sgx").unwrap();
        let parsed = jobs::parse_sgx(&serde_json::to_vec(&sgx).unwrap()).unwrap();
        let a = parsed.input_auth_config.expect("input credentials");
        assert_eq!(
            (a.username.as_str(), a.password.as_deref()),
            ("alice", Some("in-secret"))
        );
        assert!(parsed.output_auth_config.is_none(), "empty fields: none");
        assert!(!format!("{f:?}").contains("in-secret"));

        let f = form(&[
            ("request.input_image.name", "reg.example/a:1"),
            ("request.output_image.name", "reg.example/a-nitro:1"),
            ("request.output_image.auth_config.username", "bob"),
            ("request.output_image.auth_config.password", "token-123"),
        ]);
        let nitro = request_of(&f, "nitro").unwrap();
        let parsed = jobs::parse_nitro(&serde_json::to_vec(&nitro).unwrap()).unwrap();
        let a = parsed.request.output_image.auth_config.expect("output");
        assert_eq!(
            (a.username.as_str(), a.password.as_deref()),
            ("bob", Some("token-123"))
        );
        assert!(parsed.request.input_image.auth_config.is_none());
        assert!(!format!("{f:?}").contains("token-123"));
    }

    #[test]
    fn half_a_credential_is_refused_beside_the_empty_field() {
        for (pairs, field) in [
            (
                [("inputAuthConfig.password", "p"), ("x", "")],
                "inputAuthConfig.username",
            ),
            (
                [("outputAuthConfig.username", "u"), ("x", "")],
                "outputAuthConfig.password",
            ),
        ] {
            match request_of(&form(&pairs), "sgx") {
                Err(Error::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }
}
