//! The HTTP layer: the router is built from one route table (`routes::ROUTES`), which also
//! yields the OpenAPI document and the role matrix the tests check; each route's access rule is
//! enforced before its handler runs. Request bodies and queries are parsed here with errors that
//! name the field; every error leaves as `{"type", "detail"}`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::request::Parts;
use http::{HeaderValue, Method};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::auth::{self, Principal};
use crate::error::Error;
use crate::routes::{Access, ROUTES};
use crate::State;

/// The id of a request (in the log, the `X-Request-Id` header and certificate records).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The peer address of a connection (set by the server for each connection).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Deserialises a JSON value, naming the field that does not fit.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(v).map_err(field_error)
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    // serde's own message names an unknown or missing field itself.
    let inner = inner
        .split(" at line ")
        .next()
        .unwrap_or(&inner)
        .to_string();
    if path == "." || path.is_empty() {
        Error::InvalidBody(inner)
    } else {
        Error::field(path, inner)
    }
}

/// A JSON body, size-limited, parsed with field-naming errors.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// The raw bytes of a body, size-limited.
pub async fn body_bytes(state: &State, body: Body) -> Result<bytes::Bytes, Error> {
    axum::body::to_bytes(body, state.config.body_limit)
        .await
        .map_err(|_| Error::TooLarge {
            limit: state.config.body_limit,
        })
}

impl<T: DeserializeOwned> FromRequest<State> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &State) -> Result<Self, Error> {
        let bytes = body_bytes(state, req.into_body()).await?;
        if bytes.is_empty() {
            return Err(Error::InvalidBody("the request needs a JSON body".into()));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Error::InvalidBody(format!("the body is not valid JSON: {inner}"))
            } else {
                field_error_from(path, inner)
            }
        })?;
        de.end()
            .map_err(|e| Error::InvalidBody(format!("trailing data after the JSON body: {e}")))?;
        Ok(JsonBody(v))
    }
}

fn field_error_from(path: String, inner: serde_json::Error) -> Error {
    let msg = inner.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if path == "." || path.is_empty() {
        Error::InvalidBody(msg)
    } else {
        Error::field(path, msg)
    }
}

/// A query string parsed with field-naming errors (unknown parameters are refused).
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(Q).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                Error::InvalidField {
                    field: "query".into(),
                    reason: msg,
                }
            } else {
                Error::field(path, msg)
            }
        })
    }
}

/// The authenticated caller, put in place by the route's access rule.
impl FromRequestParts<State> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &State) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Error::Internal("route without an access rule".into()))
    }
}

/// The client address for throttling: the peer, or `X-Forwarded-For` behind a trusted proxy.
pub fn client_addr(state: &State, parts: &http::HeaderMap, ext: Option<&ClientAddr>) -> String {
    if state.config.trust_forwarded_for {
        // The rightmost entry is the one the trusted proxy appended (the peer it saw); entries
        // to its left were written by the client and prove nothing.
        if let Some(v) = parts.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            if let Some(last) = v.rsplit(',').next() {
                let last = last.trim();
                if last.parse::<std::net::IpAddr>().is_ok() {
                    return last.to_string();
                }
            }
        }
    }
    ext.map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn enforce(
    axum::extract::State((state, access)): axum::extract::State<(State, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let min = match access {
        Access::Public => return next.run(req).await,
        Access::Reader => cloak_api::Role::Reader,
        Access::Writer => cloak_api::Role::Writer,
        Access::Manager => cloak_api::Role::Manager,
    };
    let p = match auth::authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = p.require(min) {
        return e.into_response();
    }
    if min > cloak_api::Role::Reader && req.method() != Method::GET {
        if let Err(e) = auth::touch_api_key(&state, &p).await {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

async fn observe(
    axum::extract::State(state): axum::extract::State<State>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut resp = {
        let _g = span.enter();
        next.run(req)
    }
    .await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    // Labels come from fixed sets only: a client cannot grow the metrics with made-up methods.
    let method_label = match method.as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "OTHER",
    };
    state.metrics.request(method_label, &route, status, secs);
    if route != "/healthz" && route != "/metrics" && route != "/readyz" {
        tracing::info!(request_id = %id, method = %method, route = %route, status,
                       ms = (secs * 1000.0) as u64, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found(uri: http::Uri) -> Error {
    let path: String = uri.path().chars().take(200).collect();
    Error::NotFound {
        kind: "route",
        id: path,
    }
}

async fn method_not_allowed() -> Response {
    let body = cloak_api::ErrorBody {
        kind: "method_not_allowed".into(),
        detail: "this route does not take that method: see /openapi.json".into(),
    };
    (http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// The whole service as a router: every API route under `/v1` and IBM's `/api/v1`, plus the
/// unversioned probes and documents.
pub fn router(state: State) -> Router {
    let mut by_path: std::collections::BTreeMap<String, axum::routing::MethodRouter<State>> =
        Default::default();
    for r in ROUTES {
        let mr = (r.handler)().layer(axum::middleware::from_fn_with_state(
            (state.clone(), r.access),
            enforce,
        ));
        let mut paths = vec![r.path.to_string()];
        if let Some(rest) = r.path.strip_prefix("/v1/") {
            paths.push(format!("/api/v1/{rest}"));
        }
        for p in paths {
            let entry = by_path.remove(&p);
            let merged = match entry {
                Some(existing) => existing.merge(mr.clone()),
                None => mr.clone(),
            };
            by_path.insert(p, merged);
        }
    }
    let mut router = Router::new();
    for (p, mr) in by_path {
        router = router.route(&p, mr);
    }
    router
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// OpenAPI 3.0's Schema Object is always an object: JSON Schema's `true` (any value, which
/// schemars emits for `serde_json::Value`) is `{}` there; clients such as schemathesis reject it.
fn oas30(schema: Value) -> Value {
    match schema {
        Value::Bool(true) => json!({}),
        other => other,
    }
}

/// The OpenAPI 3.0 document of the API, generated from the route table and the types.
pub fn openapi() -> Value {
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    let error_schema = gen.subschema_for::<cloak_api::ErrorBody>();
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut op = serde_json::Map::new();
        op.insert("operationId".into(), json!(r.op_id));
        op.insert("summary".into(), json!(r.summary));
        op.insert("x-cloak-access".into(), json!(r.access.as_str()));
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string", "format": "uuid"}})
            })
            .collect();
        for (name, ty, desc) in r.query {
            params.push(json!({"name": name, "in": "query", "required": false,
                               "description": desc, "schema": {"type": ty}}));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = r.request {
            let schema = oas30(req(&mut gen).to_value());
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema}}}),
            );
        }
        let mut responses = serde_json::Map::new();
        let ok = match r.response {
            Some(resp) => json!({"description": "success",
                                 "content": {r.content_type: {"schema": oas30(resp(&mut gen).to_value())}}}),
            None => json!({"description": "success, no body"}),
        };
        responses.insert(r.status.to_string(), ok);
        let mut errors = vec![400, 404, 413, 429, 500, 503];
        if r.access != Access::Public {
            errors.extend([401, 403]);
        } else if r.op_id == "authenticateUser" {
            // Public, but it checks the Basic credentials it is sent.
            errors.push(401);
        } else if r.op_id == "getRuntimeApplicationConfig" {
            // No bearer token: a client certificate authenticates it (401 without one, 403 for a
            // build that is no longer whitelisted).
            errors.extend([401, 403]);
        }
        if r.method != "get" {
            errors.push(409);
        }
        if r.method == "get" && r.op_id == "readiness" {
            errors = vec![503];
        }
        for code in errors {
            responses.insert(
                code.to_string(),
                json!({"description": "error", "content": {"application/json": {"schema": error_schema}}}),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        if r.access != Access::Public {
            op.insert("security".into(), json!([{"bearerAuth": []}]));
        }
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method] = Value::Object(op);
    }
    let schemas: serde_json::Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "cloak manager",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apps, builds, quorum approvals, registry credentials and the audit log. \
                            Every /v1 route is also served under /api/v1. Errors: {\"type\", \"detail\"}."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        }
    })
}
