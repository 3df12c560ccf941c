//! The client's credentials against the real service over loopback: the
//! token it sends and re-reads, the publisher's handling of denials, and
//! TLS with a CA bundle and a client certificate.

mod helpers;
mod publisher;
mod tls;
mod token;
