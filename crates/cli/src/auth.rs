//! The `[auth]` settings of `serve` and `remaudit token`.
