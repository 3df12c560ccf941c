//! `remaudit query admin-log`.
