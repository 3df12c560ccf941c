//! The keyed hash chain over each remediation's events.
