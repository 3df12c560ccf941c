//! The credentials clients send: token file, CA bundle, client certificate.
