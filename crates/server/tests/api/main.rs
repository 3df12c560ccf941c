//! The HTTP API over real loopback sockets, against PostgreSQL and SQLite.

mod admin_log;
mod analytics;
mod arbitrary_bodies;
mod auth;
mod chain;
mod contract;
mod dashboard;
mod design_sql;
mod edge;
mod helpers;
mod ingest;
mod integrity;
mod limits;
mod openapi;
mod outage;
mod reads;
mod retention;
mod shutdown;
mod tls;
