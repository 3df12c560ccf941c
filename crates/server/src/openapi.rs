//! The OpenAPI document, generated from the handlers and types.

use utoipa::OpenApi;

use crate::error::Problem;
use crate::routes::{audit, health};

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
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(Problem, remaudit_model::FieldError, remaudit_model::CrdStatusSnapshot)),
    tags(
        (name = "audit", description = "Store and read remediation audit records"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;
