//! Serving TLS from certificate and key files.
