//! HTTP routes, one module per resource.

pub(crate) mod admin;
pub(crate) mod analytics;
pub(crate) mod archive;
pub(crate) mod audit;
pub(crate) mod body;
pub(crate) mod health;
pub(crate) mod session;
