//! `remaudit verify` and `remaudit chain-key`.
