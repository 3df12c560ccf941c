//! The `[tls]` settings of `serve`.
