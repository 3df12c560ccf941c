//! The OpenAPI document, generated from the handlers and types.

use utoipa::OpenApi;

use crate::routes::{analytics, audit, health};
use remaudit_api::Problem;

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
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(Problem, remaudit_model::FieldError, remaudit_model::CrdStatusSnapshot)),
    tags(
        (name = "audit", description = "Store and read remediation audit records"),
        (name = "analytics", description = "Post-mortems, success rates, durations, failures and retries"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;
