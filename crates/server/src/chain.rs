//! Tamper evidence served: the admin verification route.
