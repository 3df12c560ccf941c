//! What a client presents to the server: a bearer token re-read when it rotates, a CA bundle, a client certificate.
