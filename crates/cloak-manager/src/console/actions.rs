//! The console's changes (POST, CSRF-checked by `Post`): each builds the API's request type from
//! the form (so a malformed value is refused naming its field, as the API would), checks the
//! role of the API operation it mirrors and calls the same domain function, which audits it.
//! A refused change shows the form again with the error beside its field.

use axum::extract::{Path, State as S};
use axum::response::Response;
use http::{header, StatusCode};
use serde_json::{json, Map, Value};

use super::html::Refill;
use super::{admin, pages, see_other, Fields, Post, Session};
use crate::error::{Error, Result};
use crate::http::{client_addr, from_value, ClientAddr};
use crate::{auth, builds, registry, tasks, users, State};
use cloak_api::*;

/// Puts `value` at a dotted `path` of a JSON object.
fn put(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.into(), value);
        }
        Some((head, rest)) => {
            let inner = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = inner {
                put(m, rest, value);
            }
        }
    }
}

/// A number if the text is one, else the text (so the API's parser names the field).
fn num(s: &str) -> Value {
    match s.trim().parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s.trim()),
    }
}

fn list(s: &str) -> Value {
    json!(s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>())
}

/// Shows the result of a refused change: `render` draws the page again with the form refilled.
async fn refused<F, Fut>(err: Error, f: &Fields, form: &str, render: F) -> Response
where
    F: FnOnce(Refill) -> Fut,
    Fut: std::future::Future<Output = Result<Response>>,
{
    let refill = f.refill(form, &err);
    let problem = refill
        .problem
        .clone()
        .expect("a refused change has its problem");
    match render(refill).await {
        // The page showed the error by its field or its form.
        Ok(mut resp) if problem.placed.load(std::sync::atomic::Ordering::Relaxed) => {
            *resp.status_mut() = err.status();
            resp
        }
        // The page has no such form for this user (a forged request): the error alone.
        Ok(_) => super::error_response(&err),
        Err(e) => super::error_response(&e),
    }
}

// ---- sign-in and out ----

pub(super) async fn login(
    S(state): S<State>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let f = match Fields::parse(&state, body).await {
        Ok(f) => f,
        Err(e) => return super::error_response(&e),
    };
    let next = super::local_path(f.get("next")).to_string();
    let user = f.get("user_name").trim().to_string();
    let pair = super::cookie(&headers, super::LOGIN_COOKIE).map(super::csrf_for);
    if !pair.is_some_and(|t| super::same(&t, f.get("csrf"))) {
        let err = Error::Forbidden(
            "the sign-in form expired or its token is missing: sign in again".into(),
        );
        return pages::login_page(&state, err.status(), &next, &user, &f.refill("login", &err));
    }
    if user.is_empty() {
        let err = Error::field("user_name", "is required");
        return pages::login_page(&state, err.status(), &next, &user, &f.refill("login", &err));
    }
    let client = client_addr(&state, &headers, addr.as_deref());
    match auth::login_password(&state, user.clone(), f.get("password").to_string(), &client).await {
        Ok(a) => {
            let mut resp = see_other(&next);
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                super::set_cookie(&state, super::SESSION_COOKIE, &a.access_token, a.expires_in),
            );
            h.append(
                header::SET_COOKIE,
                super::set_cookie(&state, super::LOGIN_COOKIE, "", 0),
            );
            resp
        }
        Err(err) => pages::login_page(&state, err.status(), &next, &user, &f.refill("login", &err)),
    }
}

pub(super) async fn logout(S(state): S<State>, post: Post) -> Response {
    if let Err(e) = auth::terminate(&state, &post.s.p).await {
        return super::error_response(&e);
    }
    let mut resp = see_other("/login");
    resp.headers_mut().append(
        header::SET_COOKIE,
        super::set_cookie(&state, super::SESSION_COOKIE, "", 0),
    );
    resp
}

// ---- applications ----

fn app_body(f: &Fields, create: bool, policy: bool) -> Value {
    let mut m = Map::new();
    for k in [
        "name",
        "description",
        "input_image_name",
        "output_image_name",
    ] {
        if create || !f.get(k).is_empty() || k == "description" {
            put(&mut m, k, json!(f.get(k).trim()));
        }
    }
    if create {
        for k in ["isvprodid", "isvsvn", "mem_size", "threads"] {
            if let Some(v) = f.opt(k) {
                put(&mut m, k, num(&v));
            }
        }
    }
    if policy {
        put(&mut m, "approval_policy.n", num(f.get("approval_policy.n")));
        put(
            &mut m,
            "approval_policy.approvers",
            list(f.get("approval_policy.approvers")),
        );
        put(
            &mut m,
            "approval_policy.exclude_requester",
            json!(f.checked("approval_policy.exclude_requester")),
        );
    }
    let mut cp = Map::new();
    if let Some(v) = f.opt("certificate_policy.allowed_tcb_statuses") {
        put(&mut cp, "allowed_tcb_statuses", list(&v));
    }
    if let Some(v) = f.opt("certificate_policy.validity_seconds") {
        put(&mut cp, "validity_seconds", num(&v));
    }
    put(
        &mut cp,
        "allow_debug",
        json!(f.checked("certificate_policy.allow_debug")),
    );
    put(
        &mut cp,
        "require_nonce",
        json!(f.checked("certificate_policy.require_nonce")),
    );
    m.insert("certificate_policy".into(), Value::Object(cp));
    Value::Object(m)
}

pub(super) async fn create_app(S(state): S<State>, Post { s, f }: Post) -> Response {
    let r: Result<App> = async {
        s.may("addApplication")?;
        let req: AppRequest = from_value(app_body(&f, true, true))?;
        crate::apps::create(&state, &s.p, req).await
    }
    .await;
    match r {
        Ok(a) => see_other(&format!("/apps/{}", a.app_id)),
        Err(err) => {
            refused(err, &f, "app", |r| async move {
                pages::app_new_page(&s, StatusCode::OK, &r)
            })
            .await
        }
    }
}

pub(super) async fn update_app(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    let r: Result<App> = async {
        s.may("updateApp")?;
        // A WRITER's form has no quorum fields; one that sends them anyway is refused below,
        // as the API refuses it.
        let policy = f.0.iter().any(|(k, _)| k.starts_with("approval_policy."));
        let req: AppPatch = from_value(app_body(&f, false, policy))?;
        let id = crate::validate::uuid("app_id", &id)?;
        crate::routes::update_app_checked(&state, &s.p, &id, req).await
    }
    .await;
    match r {
        Ok(a) => see_other(&format!("/apps/{}", a.app_id)),
        Err(err) => {
            let st = state.clone();
            refused(err, &f, "app", |r| async move {
                pages::app_page(&st, &s, &id, &None, StatusCode::OK, &r).await
            })
            .await
        }
    }
}

// ---- builds and tasks ----

pub(super) async fn revoke_build(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    let r: Result<Build> = async {
        s.may("revokeBuild")?;
        let req: RevokeRequest = from_value(json!({"reason": f.get("reason").trim()}))?;
        let id = crate::validate::uuid("build_id", &id)?;
        builds::revoke(&state, &s.p, &id, &req.reason).await
    }
    .await;
    match r {
        Ok(b) => see_other(&format!("/builds/{}", b.build_id)),
        Err(err) => {
            let st = state.clone();
            refused(err, &f, "revoke", |r| async move {
                pages::build_page(&st, &s, &id, StatusCode::OK, &r).await
            })
            .await
        }
    }
}

async fn decide(state: &State, s: &Session, id: &str, f: &Fields, approve: bool) -> Result<Task> {
    s.may("UpdateTask")?;
    let body = if approve {
        json!({"status": "APPROVED"})
    } else {
        json!({"status": "DENIED", "denial_reason": f.get("denial_reason").trim()})
    };
    let req: TaskUpdateRequest = from_value(body)?;
    let id = crate::validate::uuid("task_id", id)?;
    tasks::decide(state, &s.p, &id, req).await
}

async fn decided(state: State, s: Session, id: String, f: Fields, approve: bool) -> Response {
    match decide(&state, &s, &id, &f, approve).await {
        Ok(t) => {
            let build = format!("/builds/{}", t.entity_id);
            see_other(&build)
        }
        Err(err) => {
            let form = format!("{}-{id}", if approve { "approve" } else { "deny" });
            refused(err, &f, &form, |r| async move {
                pages::tasks_page(&state, &s, &None, StatusCode::OK, &r).await
            })
            .await
        }
    }
}

pub(super) async fn approve(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    decided(state, s, id, f, true).await
}

pub(super) async fn deny(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    decided(state, s, id, f, false).await
}

// ---- registry credentials ----

fn registry_body(f: &Fields, create: bool) -> Value {
    let mut m = Map::new();
    put(&mut m, "url", json!(f.get("url").trim()));
    put(&mut m, "description", json!(f.get("description").trim()));
    let pw = f.get("credential.default.password");
    if create || !pw.is_empty() {
        put(
            &mut m,
            "credential.default.username",
            json!(f.get("credential.default.username").trim()),
        );
        put(&mut m, "credential.default.password", json!(pw));
    }
    Value::Object(m)
}

pub(super) async fn create_registry(S(state): S<State>, Post { s, f }: Post) -> Response {
    let r: Result<Registry> = async {
        s.may("createRegistry")?;
        let req: RegistryRequest = from_value(registry_body(&f, true))?;
        registry::create(&state, &s.p, req).await
    }
    .await;
    match r {
        Ok(_) => see_other("/registries"),
        Err(err) => {
            let st = state.clone();
            refused(err, &f, "reg-new", |r| async move {
                admin::registries_page(&st, &s, StatusCode::OK, &r).await
            })
            .await
        }
    }
}

pub(super) async fn update_registry(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    let r: Result<Registry> = async {
        s.may("updateRegistry")?;
        let id = crate::validate::uuid("registry_id", &id)?;
        let current = registry::get(&state, &s.p, &id).await?;
        if f.get("credential.default.password").is_empty()
            && f.get("credential.default.username").trim() != current.credential.default.username
        {
            return Err(Error::field(
                "credential.default.password",
                "give the password again to change the user name",
            ));
        }
        let req: RegistryPatch = from_value(registry_body(&f, false))?;
        registry::update(&state, &s.p, &id, req).await
    }
    .await;
    match r {
        Ok(_) => see_other("/registries"),
        Err(err) => {
            let st = state.clone();
            let form = format!("reg-{id}");
            refused(err, &f, &form, |r| async move {
                admin::registries_page(&st, &s, StatusCode::OK, &r).await
            })
            .await
        }
    }
}

pub(super) async fn delete_registry(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f: _ }: Post,
) -> Response {
    let r: Result<()> = async {
        s.may("deleteRegistry")?;
        let id = crate::validate::uuid("registry_id", &id)?;
        registry::delete(&state, &s.p, &id).await
    }
    .await;
    match r {
        Ok(()) => see_other("/registries"),
        Err(e) => super::error_response(&e),
    }
}

// ---- users and API keys ----

pub(super) async fn create_user(S(state): S<State>, Post { s, f }: Post) -> Response {
    let r: Result<User> = async {
        s.may("createUser")?;
        let mut body = json!({
            "user_name": f.get("user_name").trim(),
            "password": f.get("password"),
            "role": f.get("role"),
        });
        if let Some(m) = f.opt("user_email") {
            body["user_email"] = json!(m);
        }
        let req: UserRequest = from_value(body)?;
        users::create(&state, &s.p, req).await
    }
    .await;
    match r {
        Ok(_) => see_other("/users"),
        Err(err) => {
            let st = state.clone();
            refused(err, &f, "user-new", |r| async move {
                admin::users_page(&st, &s, StatusCode::OK, &r, None).await
            })
            .await
        }
    }
}

pub(super) async fn update_user(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f }: Post,
) -> Response {
    let r: Result<()> = async {
        // Changing role or status is the MANAGER part of updateUser; disabling is deleteUserAccount.
        s.may("createUser")?;
        let id = crate::validate::uuid("user_id", &id)?;
        let current = users::get(&state, &s.p, &id).await?;
        let role = f.get("role");
        if current.roles.first().map(|r| r.as_str()) != Some(role) {
            let req: UserPatch = from_value(json!({"role": role}))?;
            users::update(&state, &s.p, &id, req).await?;
        }
        match f.get("status") {
            s2 if s2 == current.status => {}
            "DISABLED" => crate::routes::disable_user(&state, &s.p, &id).await?,
            other => {
                let req: UserPatch = from_value(json!({"status": other}))?;
                users::update(&state, &s.p, &id, req).await?;
            }
        }
        Ok(())
    }
    .await;
    match r {
        Ok(()) => see_other("/users"),
        Err(err) => {
            let st = state.clone();
            let form = format!("user-{id}");
            refused(err, &f, &form, |r| async move {
                admin::users_page(&st, &s, StatusCode::OK, &r, None).await
            })
            .await
        }
    }
}

pub(super) async fn create_key(S(state): S<State>, Post { s, f }: Post) -> Response {
    let r: Result<ApiKeyCreated> = async {
        s.may("createApiKey")?;
        let req: ApiKeyRequest =
            from_value(json!({"name": f.get("name").trim(), "role": f.get("role")}))?;
        users::create_key(&state, &s.p, req).await
    }
    .await;
    match r {
        // The secret is shown once, on this answer (not stored, not in a redirect).
        Ok(k) => match admin::users_page(
            &state,
            &s,
            StatusCode::CREATED,
            &Refill::default(),
            Some(&k),
        )
        .await
        {
            Ok(resp) => resp,
            Err(e) => super::error_response(&e),
        },
        Err(err) => {
            let st = state.clone();
            refused(err, &f, "key-new", |r| async move {
                admin::users_page(&st, &s, StatusCode::OK, &r, None).await
            })
            .await
        }
    }
}

pub(super) async fn revoke_key(
    S(state): S<State>,
    Path(id): Path<String>,
    Post { s, f: _ }: Post,
) -> Response {
    let r: Result<()> = async {
        s.may("revokeApiKey")?;
        let id = crate::validate::uuid("key_id", &id)?;
        users::revoke_key(&state, &s.p, &id).await
    }
    .await;
    match r {
        Ok(()) => see_other("/users"),
        Err(e) => super::error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_become_nested_json_and_numbers_stay_text_when_not_numbers() {
        let mut m = Map::new();
        put(&mut m, "approval_policy.n", num("2"));
        put(
            &mut m,
            "approval_policy.approvers",
            list("role:MANAGER, ,u1"),
        );
        put(&mut m, "isvsvn", num("x1"));
        assert_eq!(
            Value::Object(m),
            json!({"approval_policy": {"n": 2, "approvers": ["role:MANAGER", "u1"]}, "isvsvn": "x1"})
        );
    }
}
