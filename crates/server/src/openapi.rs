//! The OpenAPI document, generated from the handlers and types.

use axum::Json;
use remaudit_api::{Problem, paths};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::auth::Role;
use crate::chain;
use crate::routes::{admin, analytics, archive, audit, health, session};
use crate::startup::api_routes;

/// Name of the bearer security scheme in the document.
pub const BEARER_SCHEME: &str = "bearer";

/// remaudit's OpenAPI 3.1 document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "remaudit",
        description = "Audit trail of remediation orchestration: every phase transition of a RemediationRequest, stored once and queryable."
    ),
    paths(
        audit::create,
        audit::create_batch,
        audit::list,
        audit::get,
        audit::delete,
        audit::hold,
        audit::release,
        analytics::postmortem,
        analytics::success_rate,
        analytics::durations,
        analytics::slowest,
        analytics::failures,
        analytics::retries,
        archive::sql,
        admin::log,
        chain::verify,
        session::whoami,
        health::healthz,
        health::readyz,
        health::metrics,
        serve_document,
    ),
    modifiers(&BearerScheme),
    components(schemas(Problem, remaudit_model::FieldError, remaudit_model::CrdStatusSnapshot)),
    tags(
        (name = "audit", description = "Store and read remediation audit records"),
        (name = "analytics", description = "Post-mortems, success rates, durations, failures and retries"),
        (name = "archive", description = "Read-only SQL over the archived weeks"),
        (name = "admin", description = "The append-only log of admin actions: legal holds, soft deletes, retention runs"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "admin", description = "Administration: tamper evidence"),
        (name = "session", description = "Who the caller is"),
        (name = "openapi", description = "This document"),
    )
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The document as served: the generated one, with the contract's rules
    /// that derived schemas cannot carry written in (see
    /// [`remaudit_api::openapi::state_rules`]).
    #[must_use]
    pub fn document() -> serde_json::Value {
        let mut doc = serde_json::to_value(Self::openapi()).unwrap_or_default();
        remaudit_api::openapi::state_rules(&mut doc);
        secure(&mut doc);
        doc
    }
}

/// Adds the `bearer` security scheme (a token from `remaudit token create`,
/// or a Kubernetes ServiceAccount token).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `remaudit token create`, or a Kubernetes ServiceAccount token where the server checks them",
                    ))
                    .build(),
            ),
        );
    }
}

/// Writes each `/api/v1` operation's role, security requirement and 401/403
/// answers in, from [`api_routes`]: the table the router is built from.
fn secure(doc: &mut Value) {
    let problem = json!({
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    });
    for route in api_routes() {
        let method = route.method.as_str().to_ascii_lowercase();
        let Some(op) = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(route.path))
            .and_then(|p| p.get_mut(&method))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        op.insert("security".to_owned(), json!([{ BEARER_SCHEME: [] }]));
        let needs = match route.role {
            Role::Reader => "Needs the `reader` role (`admin` also has it).".to_owned(),
            role => format!("Needs the `{role}` role."),
        };
        let description = match op.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
            _ => needs,
        };
        op.insert("description".to_owned(), Value::String(description));
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(responses) = responses {
            responses.insert(
                "401".to_owned(),
                json!({
                    "description": "No credential, or one the server does not accept (unknown, expired, malformed); see WWW-Authenticate",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm=\"remaudit\""}},
                    "content": problem.clone(),
                }),
            );
            responses.insert(
                "403".to_owned(),
                json!({
                    "description": format!("The caller does not have the {} role", route.role),
                    "content": problem.clone(),
                }),
            );
        }
    }
}

/// Serves this document.
#[utoipa::path(
    get,
    path = paths::OPENAPI,
    tag = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this service", body = Object),
    )
)]
pub(crate) async fn serve_document() -> Json<Value> {
    Json(ApiDoc::document())
}
