//! Queue adapters against local servers.
