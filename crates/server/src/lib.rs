//! The remaudit HTTP service: ingestion, reads, health, metrics and the
//! OpenAPI document, over any [`remaudit_store::Store`].

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(not(feature = "archive"))]
#[path = "archive_off.rs"]
pub mod archive;
pub mod auth;
mod chain;
mod coalesce;
mod error;
mod openapi;
mod poll;
mod routes;
mod settings;
mod startup;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use chain::spawn_periodic_check;
pub use error::{ApiError, PROBLEM_JSON};
pub use openapi::ApiDoc;
pub use settings::ServerSettings;
pub use startup::{ApiRoute, AppState, api_routes, router, serve, serve_with};

#[doc(hidden)]
pub use routes::body::fuzzing;
