//! Bearer tokens from a file of hashes.
