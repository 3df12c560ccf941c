//! The Kubernetes authenticator's settings of `serve`.
