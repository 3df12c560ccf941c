//! The wire contract of remaudit's HTTP API, in one place: every request and
//! answer type, the problem document of errors, and the route paths.
//!
//! The server builds its router and OpenAPI document from these, and a
//! client imports its types from here, so both sides decode the same shapes.
//! Closed enums (such as [`audit::ItemStatus`]) fail to decode a value they do
//! not know, rather than guess.

pub mod admin;
pub mod analytics;
pub mod archive;
pub mod audit;
pub mod chain;
pub mod health;
pub mod openapi;
pub mod paths;
pub mod problem;
pub mod session;

pub use problem::{PROBLEM_JSON, Problem};
pub use remaudit_model::{
    CrdStatusSnapshot, EventRecord, FieldError, RemediationOrchestrationAudit, ServiceCrdStatuses,
    StoredAudit,
};
