//! The `remaudit` binary as an operator runs it, and the publisher against a
//! real service on PostgreSQL.

mod archive_analytics;
mod archive_sql;
mod auth;
mod chain;
mod chart;
mod config;
mod credentials;
mod helpers;
mod kubernetes;
mod publish;
mod query;
mod retention;
mod scale_out;
mod serve;
mod simulate;
mod tls;
