//! Mutual TLS: a verified client certificate's subject mapped to a role.
