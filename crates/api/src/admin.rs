//! Admin actions and the admin log.
