//! `GET /api/v1/whoami`: who the caller is and which roles it holds.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use remaudit_api::paths;
use remaudit_api::session::WhoAmI;

use crate::auth::layer::holds;
use crate::auth::{AuthPolicy, Caller, ClientCertificate, Role};
use crate::startup::AppState;

/// The caller's subject and roles (the dashboard shows admin actions to admins only).
#[utoipa::path(
    get,
    path = paths::WHOAMI,
    tag = "session",
    responses((status = 200, description = "The caller and its roles", body = WhoAmI))
)]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    certificate: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
) -> Json<WhoAmI> {
    let subject = caller.map_or_else(|| Caller::anonymous().subject, |c| c.0.subject);
    // The route needs reader, so the caller holds it.
    let mut roles = vec![Role::Reader.as_str().to_owned()];
    if holds(
        &state.auth,
        &headers,
        certificate.as_ref().map(|c| &c.0),
        Role::Admin,
    )
    .await
    {
        roles.push(Role::Admin.as_str().to_owned());
    }
    Json(WhoAmI {
        subject,
        roles,
        auth_enforced: matches!(*state.auth, AuthPolicy::Enforced { .. }),
    })
}
