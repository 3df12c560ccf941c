//! The middleware that asks the authenticators before a handler runs.
